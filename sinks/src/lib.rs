//! Adapters to the outside world: the ServiceDesk Plus v3 client, the
//! OpenAI-compatible LLM client, the tenant/history/feedback/idempotency
//! stores, and simulators of SDP and the LLM that speak the same APIs (used
//! by the demo, the tests and the load-test harness).
//!
//! Every error that leaves this crate says whether retrying can help
//! ([`RetryHint`]), decided here where the error is born. This crate knows
//! nothing of Kafka.
//!
//! Layout:
//! - [`servicedesk`]: SDP v3 client (requests, notes, solutions, assets).
//! - [`llm`]: chat-completions client.
//! - [`breaker`]: circuit breaker shared by both clients' callers.
//! - [`store`]: store traits (partitioned by tenant) and the embedded store.
//! - [`sim`]: SDP and LLM simulators on real HTTP servers.
//! - [`metrics`]: every Prometheus metric of ARCHITECTURE §8, defined once.
//! - [`secrets`]: OS randomness for new secrets; the one constant-time comparison.

pub mod breaker;
pub mod llm;
pub mod metrics;
pub mod secrets;
pub mod servicedesk;
pub mod sim;
pub mod store;

use std::time::Duration;

/// Whether an operation that failed may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// The same input will fail the same way (bad credentials, rejected input).
    Permanent,
    /// A later attempt may succeed; the peer may have said when.
    Retryable { after: Option<Duration> },
    /// Not a failure of the job: a rate limit (the tenant's own, or the
    /// peer's `429`) says to come back after `after`. Deferring it does not
    /// use up a retry attempt.
    Throttled { after: Duration },
}

impl RetryHint {
    pub fn is_retryable(self) -> bool {
        matches!(self, RetryHint::Retryable { .. } | RetryHint::Throttled { .. })
    }
    pub fn label(self) -> &'static str {
        match self {
            RetryHint::Permanent => "permanent",
            RetryHint::Retryable { .. } => "retryable",
            RetryHint::Throttled { .. } => "throttled",
        }
    }
}

/// Parses an HTTP `Retry-After` value (seconds or an HTTP date).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A secret that never shows in `Debug` or logs; `==` is constant-time
/// ([`secrets::constant_time_eq`]).
#[derive(Clone, Eq)]
pub struct Secret(String);

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        secrets::constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        let future = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(future)).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("whsec_abc");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
