//! A per-source budget of failed authentication, checked before any store
//! lookup or HMAC work.
//!
//! What is limited: requests that fail authentication (a webhook answered
//! `401`/`403`/`413`/`415` before its signature verified; a tenant, admin or
//! viewer token that is missing or wrong). Each failure is charged to its
//! source address; once a source's budget is spent, every request from it
//! to an authenticated endpoint is answered `429` with `Retry-After` before
//! the store or the HMAC is touched, until the budget refills. Requests that
//! authenticate are never charged, so ServiceDesk Plus (a few addresses, a
//! high rate, every webhook signed) never meets the limit; a tenant whose
//! secret is wrong fails at its ticket rate, far below the default budget.
//!
//! The budget is a GCRA (generic cell rate algorithm): one theoretical
//! arrival time per source, `rate` failures per minute sustained, `burst`
//! at once. A charge may push a source into debt (failures that were in
//! flight when the budget ran out still count), which only lengthens its
//! wait. Sources are IPv4 addresses and IPv6 /64 prefixes (one host holds a
//! whole /64). The state is a `moka` cache capped at `max_sources` entries
//! (TinyLFU admission: a flood of new sources does not push out the ones
//! that keep failing), each idle entry dropped once its debt is repaid.
//!
//! Behind a reverse proxy every request comes from the proxy: list it in
//! `TICKETFLOW_TRUSTED_PROXIES`, and the source is then the right-most
//! `X-Forwarded-For` address that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// The limits (`TICKETFLOW_AUTH_FAILURES_PER_MINUTE`,
/// `TICKETFLOW_AUTH_FAILURE_BURST`, `TICKETFLOW_AUTH_FAILURE_SOURCES`,
/// `TICKETFLOW_TRUSTED_PROXIES`).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLimits {
    /// Failures per minute a source may sustain; 0 turns the limit off.
    pub failures_per_minute: u32,
    /// Failures a source may have at once before it is refused.
    pub burst: u32,
    /// Sources tracked at most (bounds the limiter's memory).
    pub max_sources: u64,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            failures_per_minute: 600,
            burst: 600,
            max_sources: 65_536,
            trusted_proxies: Vec::new(),
        }
    }
}

/// An address block, `192.0.2.0/24`, `2001:db8::/32` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an address or block like 10.0.0.0/8 or fd00::/8"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// What a budget is kept for: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => SourceKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

pub struct SourceLimiter {
    limits: SourceLimits,
    /// Time one failure costs.
    interval: Duration,
    /// How far ahead of now a source's arrival time may run.
    tolerance: Duration,
    /// Theoretical arrival time of each source's next failure.
    tat: moka::sync::Cache<SourceKey, Instant>,
}

impl SourceLimiter {
    pub fn new(limits: SourceLimits) -> Self {
        let per_minute = limits.failures_per_minute.max(1);
        let interval = Duration::from_secs(60) / per_minute;
        let tolerance = interval * limits.burst.max(1).saturating_sub(1);
        let tat = moka::sync::Cache::builder()
            .max_capacity(limits.max_sources.max(1))
            .time_to_idle(tolerance + interval * 2)
            .build();
        SourceLimiter {
            limits,
            interval,
            tolerance,
            tat,
        }
    }

    pub fn limits(&self) -> &SourceLimits {
        &self.limits
    }

    fn enabled(&self) -> bool {
        self.limits.failures_per_minute > 0
    }

    /// The source a request is charged to: the peer address, or behind a
    /// trusted proxy the right-most forwarded address not itself trusted.
    pub fn source_of(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let peer = peer.map(|p| canonical(p.ip())).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let trusted = |ip: IpAddr| self.limits.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        let mut source = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // Unparsable: the hop before it cannot be believed either.
                break;
            };
            source = canonical(ip);
            if !trusted(source) {
                break;
            }
        }
        source
    }

    /// `Err(seconds)` when the source's budget is spent: answer `429` with
    /// that `Retry-After`, doing no other work.
    pub fn check(&self, source: IpAddr) -> Result<(), u64> {
        self.check_at(source, Instant::now())
    }

    fn check_at(&self, source: IpAddr, now: Instant) -> Result<(), u64> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(tat) = self.tat.get(&SourceKey::from(source)) else {
            return Ok(());
        };
        // Refused once the next failure would land beyond the burst.
        let ahead = tat.saturating_duration_since(now);
        if ahead > self.tolerance {
            let wait = ahead - self.tolerance;
            Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        } else {
            Ok(())
        }
    }

    /// Charges one failed authentication to `source`.
    pub fn charge(&self, source: IpAddr) {
        self.charge_at(source, Instant::now())
    }

    fn charge_at(&self, source: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let interval = self.interval;
        self.tat
            .entry(SourceKey::from(source))
            .and_upsert_with(|old| old.map(|e| *e.value()).unwrap_or(now).max(now) + interval);
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> u64 {
        self.tat.run_pending_tasks();
        self.tat.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limiter(per_minute: u32, burst: u32) -> SourceLimiter {
        SourceLimiter::new(SourceLimits {
            failures_per_minute: per_minute,
            burst,
            ..SourceLimits::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_spent_budget_refuses_until_it_refills() {
        let l = limiter(60, 5);
        let (a, t0) = (ip("203.0.113.7"), Instant::now());
        for _ in 0..5 {
            assert_eq!(l.check_at(a, t0), Ok(()));
            l.charge_at(a, t0);
        }
        let wait = l.check_at(a, t0).unwrap_err();
        assert_eq!(wait, 1, "one failure a second refills one slot a second");
        assert!(
            l.check_at(ip("203.0.113.8"), t0).is_ok(),
            "other sources keep their budget"
        );
        assert!(l.check_at(a, t0 + Duration::from_millis(999)).is_err());
        assert!(l.check_at(a, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn failures_in_flight_past_the_budget_lengthen_the_wait() {
        let l = limiter(60, 2);
        let (a, t0) = (ip("198.51.100.1"), Instant::now());
        for _ in 0..12 {
            l.charge_at(a, t0);
        }
        assert_eq!(l.check_at(a, t0), Err(11));
        assert!(l.check_at(a, t0 + Duration::from_secs(11)).is_ok());
    }

    #[test]
    fn off_when_the_rate_is_zero() {
        let l = limiter(0, 1);
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            l.charge(a);
        }
        assert!(l.check(a).is_ok());
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
        let l = limiter(60, 1);
        let t0 = Instant::now();
        l.charge_at(ip("2001:db8:1:2::1"), t0);
        assert!(l.check_at(ip("2001:db8:1:2:ffff::9"), t0).is_err(), "same /64");
        assert!(l.check_at(ip("2001:db8:1:3::1"), t0).is_ok(), "another /64");
        l.charge_at(ip("::ffff:192.0.2.9"), t0);
        assert!(l.check_at(ip("192.0.2.9"), t0).is_err());
    }

    #[test]
    fn the_state_is_bounded_by_max_sources() {
        let l = SourceLimiter::new(SourceLimits {
            max_sources: 1_000,
            ..SourceLimits::default()
        });
        for i in 0..20_000u32 {
            l.charge(IpAddr::from(i.to_be_bytes()));
        }
        assert!(l.tracked() <= 1_000, "{} sources tracked", l.tracked());
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let l = SourceLimiter::new(SourceLimits {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "fd00::1".parse().unwrap()],
            ..SourceLimits::default()
        });
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 198.51.100.4, 10.2.3.4"),
        );
        let proxy: SocketAddr = "10.9.9.9:443".parse().unwrap();
        assert_eq!(
            l.source_of(Some(proxy), &h),
            ip("198.51.100.4"),
            "spoofed left-most hop ignored"
        );
        let stranger: SocketAddr = "203.0.113.5:5000".parse().unwrap();
        assert_eq!(l.source_of(Some(stranger), &h), ip("203.0.113.5"));
        assert_eq!(l.source_of(Some(proxy), &HeaderMap::new()), ip("10.9.9.9"));
        let v6: SocketAddr = "[fd00::1]:443".parse().unwrap();
        assert_eq!(l.source_of(Some(v6), &h), ip("198.51.100.4"));
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.4, garbage"));
        assert_eq!(l.source_of(Some(proxy), &h), ip("10.9.9.9"));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nope".parse::<IpNet>().is_err());
        assert!("0.0.0.0/0".parse::<IpNet>().unwrap().contains(ip("8.8.8.8")));
    }
}
