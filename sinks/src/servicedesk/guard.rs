//! Per-tenant protection of ServiceDesk Plus: every tenant has its own SDP
//! instance, so each gets its own circuit breaker (one tenant's outage never
//! opens the circuit for the others) and its own request-rate limit (the
//! `requests_per_minute` of its tenant record).
//!
//! The rate limit is a GCRA token bucket (burst of one second's worth of
//! requests, at least one). A stage *reserves* its calls before making them:
//! a short wait (up to `max_wait`) is taken in place; a longer one is
//! refused with the time at which the tenant's budget allows the calls, so
//! the stage defers the record to a retry tier instead of holding an
//! in-flight slot — other tenants' tickets never queue behind a throttled
//! tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::breaker::{BreakerState, CircuitBreaker, CircuitOpen};
use crate::metrics::metrics;

/// Refused reservation: the tenant's budget allows the calls in `retry_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ServiceDesk Plus rate limit of {per_minute}/min for this tenant reached; next slot in {retry_in:?}")]
pub struct Throttled {
    pub per_minute: u32,
    pub retry_in: Duration,
}

#[derive(Debug)]
struct Gcra {
    /// Theoretical arrival time of the next request.
    tat: Instant,
}

/// One tenant's breaker and limiter.
#[derive(Debug)]
pub struct TenantGuard {
    pub breaker: CircuitBreaker,
    limiter: Mutex<Gcra>,
}

impl TenantGuard {
    /// Reserves `calls` requests under `per_minute`. `Ok(wait)`: sleep
    /// `wait`, then call. `Err`: nothing reserved; come back in `retry_in`.
    pub fn reserve(&self, per_minute: u32, calls: u32, max_wait: Duration) -> Result<Duration, Throttled> {
        self.reserve_at(Instant::now(), per_minute, calls, max_wait)
    }

    fn reserve_at(&self, now: Instant, per_minute: u32, calls: u32, max_wait: Duration) -> Result<Duration, Throttled> {
        let per_minute = per_minute.max(1);
        let interval = Duration::from_secs(60) / per_minute;
        let burst = (per_minute / 60).max(1);
        let tolerance = interval * (burst - 1);
        let mut g = self.limiter.lock().expect("limiter lock");
        let tat = g.tat.max(now);
        let new_tat = tat + interval * calls.max(1);
        // The last of the calls may start at new_tat - interval; with the
        // burst tolerance that is allowed `tolerance` early.
        let start_last = (new_tat - interval).checked_sub(tolerance).unwrap_or(now);
        let wait = start_last.saturating_duration_since(now);
        if wait > max_wait {
            return Err(Throttled {
                per_minute,
                retry_in: wait,
            });
        }
        g.tat = new_tat;
        Ok(wait)
    }

    /// SDP itself said to stay away (`429` with `Retry-After`): no request
    /// for this tenant before then.
    pub fn back_off(&self, for_: Duration) {
        let mut g = self.limiter.lock().expect("limiter lock");
        g.tat = g.tat.max(Instant::now() + for_);
    }
}

/// The guards of every tenant seen by this process.
#[derive(Debug)]
pub struct SdpGuards {
    threshold: u32,
    open_for: Duration,
    /// Longest wait for a rate-limit slot taken in place.
    pub max_wait: Duration,
    guards: Mutex<HashMap<String, Arc<TenantGuard>>>,
}

impl SdpGuards {
    pub fn new(threshold: u32, open_for: Duration, max_wait: Duration) -> Self {
        metrics()
            .circuit_breaker_state
            .with_label_values(&["servicedesk"])
            .set(0);
        SdpGuards {
            threshold,
            open_for,
            max_wait,
            guards: Mutex::new(HashMap::new()),
        }
    }

    pub fn tenant(&self, tenant_id: &str) -> Arc<TenantGuard> {
        let mut g = self.guards.lock().expect("guards lock");
        g.entry(tenant_id.to_string())
            .or_insert_with(|| {
                Arc::new(TenantGuard {
                    breaker: CircuitBreaker::for_tenant("servicedesk", tenant_id, self.threshold, self.open_for),
                    limiter: Mutex::new(Gcra { tat: Instant::now() }),
                })
            })
            .clone()
    }

    /// Asks the tenant's breaker for a call.
    pub fn acquire(&self, tenant_id: &str) -> Result<(), CircuitOpen> {
        let r = self.tenant(tenant_id).breaker.acquire();
        self.publish();
        r
    }

    pub fn record_success(&self, tenant_id: &str) {
        self.tenant(tenant_id).breaker.record_success();
        self.publish();
    }

    pub fn record_failure(&self, tenant_id: &str) {
        self.tenant(tenant_id).breaker.record_failure();
        self.publish();
    }

    /// Tenants whose circuit is not closed.
    pub fn not_closed(&self) -> Vec<(String, BreakerState)> {
        let g = self.guards.lock().expect("guards lock");
        let mut v: Vec<(String, BreakerState)> = g
            .iter()
            .map(|(t, guard)| (t.clone(), guard.breaker.state()))
            .filter(|(_, s)| *s != BreakerState::Closed)
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// `ticketflow_circuit_breaker_state{system="servicedesk"}`: the worst
    /// state over tenants (1 open, 2 half-open, 0 all closed).
    fn publish(&self) {
        let states = self.not_closed();
        let v = if states.iter().any(|(_, s)| *s == BreakerState::Open) {
            1
        } else if states.is_empty() {
            0
        } else {
            2
        };
        metrics()
            .circuit_breaker_state
            .with_label_values(&["servicedesk"])
            .set(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> TenantGuard {
        TenantGuard {
            breaker: CircuitBreaker::for_tenant("servicedesk", "t", 3, Duration::from_secs(1)),
            limiter: Mutex::new(Gcra { tat: Instant::now() }),
        }
    }

    #[test]
    fn spaces_requests_at_the_tenant_rate() {
        let g = guard();
        let now = Instant::now();
        // 60/min: one per second, burst 1.
        assert_eq!(g.reserve_at(now, 60, 1, Duration::ZERO), Ok(Duration::ZERO));
        let t = g.reserve_at(now, 60, 1, Duration::ZERO).unwrap_err();
        assert_eq!(t.retry_in, Duration::from_secs(1));
        assert_eq!(
            g.reserve_at(now, 60, 1, Duration::from_secs(2)),
            Ok(Duration::from_secs(1))
        );
        // A refused reservation took nothing: the next slot is still at 2 s.
        assert_eq!(
            g.reserve_at(now, 60, 2, Duration::from_secs(1)).unwrap_err().retry_in,
            Duration::from_secs(3)
        );
        assert_eq!(
            g.reserve_at(now + Duration::from_secs(2), 60, 1, Duration::ZERO),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn allows_a_burst_of_one_seconds_worth() {
        let g = guard();
        let now = Instant::now();
        // 600/min: 10 per second, interval 100 ms, burst 10.
        for _ in 0..10 {
            assert_eq!(g.reserve_at(now, 600, 1, Duration::ZERO), Ok(Duration::ZERO));
        }
        assert_eq!(
            g.reserve_at(now, 600, 1, Duration::ZERO).unwrap_err().retry_in,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn back_off_pushes_the_next_slot() {
        let g = guard();
        g.back_off(Duration::from_secs(5));
        let t = g.reserve(600, 1, Duration::ZERO).unwrap_err();
        assert!(
            t.retry_in > Duration::from_secs(4) && t.retry_in <= Duration::from_secs(5),
            "{t:?}"
        );
    }

    #[test]
    fn one_tenants_breaker_does_not_open_anothers() {
        let guards = SdpGuards::new(2, Duration::from_secs(60), Duration::ZERO);
        guards.record_failure("a");
        guards.record_failure("a");
        assert!(guards.acquire("a").is_err());
        assert!(guards.acquire("b").is_ok());
        assert_eq!(guards.not_closed(), vec![("a".to_string(), BreakerState::Open)]);
    }
}
