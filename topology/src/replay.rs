//! Operator actions that re-send records or move consumer positions:
//! `ticketflow replay`, `ticketflow dlq list|show|retry` (and the admin
//! API's `POST /api/v1/dlq/retry`), `ticketflow groups reset-offsets` and
//! `ticketflow topics add-partitions`.
//!
//! What they promise:
//! - **Streaming, bounded memory.** Topics are read one partition at a time
//!   in windows of `--batch` records (default [`DEFAULT_BATCH`]); each
//!   window is produced, its delivery acknowledgements awaited, then the
//!   next is read.
//! - **The end is an offset, never a silence.** Each partition's end is
//!   captured before anything is sent (its high watermark then, or the first
//!   record at or after `--to`); a read that gets nothing for
//!   [`STALL_TIMEOUT`] before that offset is an error, not the end.
//! - **Progress only for what was re-sent.** A DLQ retry remembers (in the
//!   group `<prefix>.dlq-retry.<stage>`) the offset after the last record of
//!   an unbroken run of records that were re-sent and acknowledged, or that
//!   can never be re-sent (unreadable envelopes, poison records without job
//!   headers: reported as `skipped`). A record left out by a filter, or one
//!   whose re-send failed, holds the position there: a later retry looks at
//!   it again (and re-sends the matching records after it again; the update
//!   stage still posts one note per job).
//! - **Dry runs send and commit nothing**; they list each record that would
//!   be sent.
//! - **Replay has two explicit modes** ([`ReplayMode`]); there is no default.
//!
//! Layout: [`reader`] (bounded partition reads, time → offset, pacing,
//! sending with acknowledgements), [`dlq`], [`webhooks`] (replay),
//! [`admin`] (group offsets, partitions), [`cli`] (arguments and printing).

pub mod admin;
pub mod cli;
pub mod dlq;
pub mod reader;
pub mod webhooks;

use std::time::Duration;

pub use dlq::DlqRetryOptions;
pub use webhooks::{ReplayMode, ReplayOptions};

/// Records read, sent and acknowledged per step when `--batch` is not given.
pub const DEFAULT_BATCH: usize = 500;
/// The largest `--batch` accepted.
pub const MAX_BATCH: usize = 10_000;
/// How long a read may get nothing before the captured end before it is an error.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `error_class` of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrorClass {
    Retryable,
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Permanent => "permanent",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "retryable" => Ok(ErrorClass::Retryable),
            "permanent" => Ok(ErrorClass::Permanent),
            other => Err(format!("error class '{other}' must be retryable or permanent")),
        }
    }
}

/// Which records an operation touches. Every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    pub ticket: Option<String>,
    /// Dead letters only.
    pub error_class: Option<ErrorClass>,
    /// Records whose timestamp is before this are left out.
    pub from_ms: Option<i64>,
    /// Reading stops at the first record whose timestamp is at or after this.
    pub to_ms: Option<i64>,
}

impl Filter {
    /// Why a record with these attributes is left out, if it is.
    pub(crate) fn excludes(
        &self,
        tenant: &str,
        ticket: &str,
        error_class: Option<&str>,
        timestamp_ms: Option<i64>,
    ) -> Option<String> {
        if let Some(t) = self.tenant.as_deref().filter(|t| *t != tenant) {
            return Some(format!("tenant {tenant} is not {t}"));
        }
        if let Some(t) = self.ticket.as_deref().filter(|t| *t != ticket) {
            return Some(format!("ticket {ticket} is not {t}"));
        }
        if let Some(c) = self.error_class.filter(|c| Some(c.as_str()) != error_class) {
            return Some(format!(
                "error class {} is not {}",
                error_class.unwrap_or("unknown"),
                c.as_str()
            ));
        }
        if let (Some(from), Some(ts)) = (self.from_ms, timestamp_ms) {
            if ts < from {
                return Some(format!("written at {ts}, before --from {from}"));
            }
        }
        None
    }
}

/// `--batch`, checked.
pub fn check_batch(batch: usize) -> Result<usize, String> {
    if batch == 0 || batch > MAX_BATCH {
        return Err(format!("--batch {batch} must be from 1 to {MAX_BATCH}"));
    }
    Ok(batch)
}

/// `--rate`, checked.
pub fn check_rate(rate: Option<f64>) -> Result<Option<f64>, String> {
    match rate {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            Err(format!("--rate {r} must be a number of records per second above 0"))
        }
        other => Ok(other),
    }
}

/// Parses a point in time: RFC 3339 (`2026-11-22T14:00:00Z`), a date, epoch
/// milliseconds, or a duration ago (`30m`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let now = sinks::now_ms();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(d) = crate::config::parse_duration(s) {
        return Ok(now - d.as_millis() as i64);
    }
    let bad =
        || format!("'{s}' is not a time: use 2026-11-22T14:00:00Z, 2026-11-22, epoch ms, or a duration ago like 30m");
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00Z"));
    let day = ingest::api::parse_date(date, "time").map_err(|_| bad())?;
    let time = time.trim_end_matches('Z');
    let parts: Vec<&str> = time.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad());
    }
    let h: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: i64 = parts[1].parse().map_err(|_| bad())?;
    let sec: f64 = parts
        .get(2)
        .map(|p| p.parse())
        .transpose()
        .map_err(|_| bad())?
        .unwrap_or(0.0);
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0.0..61.0).contains(&sec) {
        return Err(bad());
    }
    Ok(day + (h * 3600 + m * 60) * 1000 + (sec * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("1970-01-01T01:00:30Z").unwrap(), 3_630_000);
        let ago = parse_time("30m").unwrap();
        assert!((sinks::now_ms() - ago - 1_800_000).abs() < 5_000);
        assert!(parse_time("yesterday").unwrap_err().contains("is not a time"));
        assert!(parse_time("1970-01-01T25:00").is_err());
    }

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(cli::fmt_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(cli::fmt_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(cli::fmt_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            parse_time(&cli::fmt_ms(1_700_000_000_000).replace(".000", "")).unwrap(),
            1_700_000_000_000
        );
    }

    #[test]
    fn filters_name_what_left_a_record_out() {
        let f = Filter {
            tenant: Some("acme".into()),
            error_class: Some(ErrorClass::Permanent),
            from_ms: Some(100),
            ..Filter::default()
        };
        assert_eq!(f.excludes("acme", "1", Some("permanent"), Some(100)), None);
        assert!(f
            .excludes("globex", "1", Some("permanent"), Some(100))
            .unwrap()
            .contains("globex"));
        assert!(f
            .excludes("acme", "1", Some("retryable"), Some(100))
            .unwrap()
            .contains("retryable"));
        assert!(f.excludes("acme", "1", None, Some(100)).unwrap().contains("unknown"));
        assert!(f
            .excludes("acme", "1", Some("permanent"), Some(99))
            .unwrap()
            .contains("--from"));
        assert!(check_batch(0).is_err() && check_batch(MAX_BATCH + 1).is_err() && check_batch(10).is_ok());
        assert!(check_rate(Some(0.0)).is_err() && check_rate(Some(f64::NAN)).is_err());
        assert_eq!(check_rate(Some(2.5)).unwrap(), Some(2.5));
    }
}
