//! Per-tenant protection of ServiceDesk Plus: every tenant has its own SDP
//! instance, so each gets its own circuit breaker (one tenant's outage never
//! opens the circuit for the others) and its own request-rate limit (the
//! `requests_per_minute` of its tenant record).
//!
//! The rate limit is a GCRA token bucket (burst of one second's worth of
//! requests, at least one) whose state — one number per tenant, the
//! theoretical arrival time of the tenant's next call — lives in the store
//! ([`SdpRateStore`]) and moves by compare-and-set. So the limit holds for
//! the tenant as a whole, however many processes and consumer-group members
//! call its SDP, and a member that joins or leaves changes nothing (unlike a
//! limit divided among the members, which must know how many there are).
//! Within a process one reservation per tenant runs at a time, and the last
//! value this process wrote is tried first, so the steady state is one store
//! write per reservation; a process that lost a race re-reads and retries.
//!
//! A stage *reserves* its calls before making them: a short wait (up to
//! `max_wait`) is taken in place; a longer one is refused with the time at
//! which the tenant's budget allows the calls, so the stage defers the
//! record to a retry tier instead of holding an in-flight slot — other
//! tenants' tickets never queue behind a throttled tenant.
//!
//! SDP's own `429` (with `Retry-After`) makes this process stay away from
//! the tenant for that long; other processes learn it from their own `429`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::breaker::{BreakerState, CircuitBreaker, CircuitOpen};
use crate::metrics::metrics;
use crate::store::{SdpRateStore, StoreError};

/// Refused reservation: the tenant's budget allows the calls in `retry_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ServiceDesk Plus rate limit of {per_minute}/min for this tenant reached; next slot in {retry_in:?}")]
pub struct Throttled {
    pub per_minute: u32,
    pub retry_in: Duration,
}

/// Compare-and-set attempts of one reservation before it gives up (the
/// record is deferred as throttled): only reached when many processes race
/// for one tenant at once.
const CAS_ATTEMPTS: usize = 8;

/// The spacing of a tenant's calls in milliseconds (rounded up, so the
/// limit is never exceeded by rounding).
fn interval_ms(per_minute: u32) -> i64 {
    let per_minute = i64::from(per_minute.max(1));
    (60_000 + per_minute - 1) / per_minute
}

/// One GCRA step, in epoch milliseconds: from the tenant's theoretical
/// arrival time `tat_ms` (`None`: no call yet), reserve `calls` calls at
/// `now_ms`. `Ok((new_tat, wait))`: store `new_tat`, sleep `wait`, call.
/// `Err`: nothing may be stored; come back in `retry_in`.
pub fn gcra_step(
    tat_ms: Option<i64>,
    now_ms: i64,
    per_minute: u32,
    calls: u32,
    max_wait: Duration,
) -> Result<(i64, Duration), Throttled> {
    let per_minute = per_minute.max(1);
    let interval = interval_ms(per_minute);
    let burst = i64::from((per_minute / 60).max(1));
    let tolerance = interval * (burst - 1);
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat + interval * i64::from(calls.max(1));
    // The last of the calls may start at new_tat - interval; with the burst
    // tolerance that is allowed `tolerance` early.
    let start_last = new_tat - interval - tolerance;
    let wait = Duration::from_millis((start_last - now_ms).max(0) as u64);
    // Spacing the reservation's own calls may take longer than `max_wait`
    // at a low rate (3 calls at 20/min: 6 s). Refusing that would refuse it
    // for ever — nothing is stored, the next try computes the same — so a
    // wait no longer than the calls' own spacing is always granted.
    let own_spacing = Duration::from_millis((interval * (i64::from(calls.max(1)) - 1) - tolerance).max(0) as u64);
    if wait > max_wait.max(own_spacing) {
        return Err(Throttled {
            per_minute,
            retry_in: wait,
        });
    }
    Ok((new_tat, wait))
}

/// One tenant's breaker and limiter.
#[derive(Debug)]
pub struct TenantGuard {
    pub breaker: CircuitBreaker,
    /// The tenant's shared limiter value as this process last wrote it
    /// (`Some(None)`: known to be absent); the lock makes this process's
    /// reservations for the tenant one at a time.
    known_tat: tokio::sync::Mutex<Option<Option<i64>>>,
    /// No call before this instant (SDP answered `429` with `Retry-After`).
    backoff_until: Mutex<Option<Instant>>,
}

impl TenantGuard {
    fn new(breaker: CircuitBreaker) -> Self {
        TenantGuard {
            breaker,
            known_tat: tokio::sync::Mutex::new(None),
            backoff_until: Mutex::new(None),
        }
    }

    /// Reserves `calls` SDP calls of `tenant_id` under `per_minute`, shared
    /// through `store` with every other process. `Ok(Ok(wait))`: sleep
    /// `wait`, then call. `Ok(Err)`: nothing reserved; come back in
    /// `retry_in`. `Err`: the store failed.
    pub async fn reserve<S: SdpRateStore + ?Sized>(
        &self,
        store: &S,
        tenant_id: &str,
        per_minute: u32,
        calls: u32,
        max_wait: Duration,
    ) -> Result<Result<Duration, Throttled>, StoreError> {
        let backoff = self
            .backoff_until
            .lock()
            .expect("backoff lock")
            .map(|until| until.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        if backoff > max_wait {
            return Ok(Err(Throttled {
                per_minute: per_minute.max(1),
                retry_in: backoff,
            }));
        }
        let mut known = self.known_tat.lock().await;
        let mut guess = *known;
        for _ in 0..CAS_ATTEMPTS {
            let from_cache = guess.is_some();
            let current = match guess {
                Some(c) => c,
                None => store.sdp_rate_tat(tenant_id).await?,
            };
            match gcra_step(
                current,
                crate::now_ms(),
                per_minute,
                calls,
                max_wait.saturating_sub(backoff),
            ) {
                // What this process wrote last may be behind the store:
                // read before refusing.
                Err(_) if from_cache => guess = None,
                Err(t) => {
                    *known = Some(current);
                    return Ok(Err(Throttled {
                        retry_in: t.retry_in + backoff,
                        ..t
                    }));
                }
                Ok((new_tat, wait)) => {
                    if store.swap_sdp_rate_tat(tenant_id, current, new_tat).await? {
                        *known = Some(Some(new_tat));
                        return Ok(Ok(wait.max(backoff)));
                    }
                    guess = None;
                }
            }
        }
        *known = None;
        Ok(Err(Throttled {
            per_minute: per_minute.max(1),
            retry_in: Duration::from_millis(interval_ms(per_minute) as u64),
        }))
    }

    /// SDP itself said to stay away (`429` with `Retry-After`): no request
    /// for this tenant from this process before then.
    pub fn back_off(&self, for_: Duration) {
        let mut g = self.backoff_until.lock().expect("backoff lock");
        let until = Instant::now() + for_;
        *g = Some(g.map_or(until, |u| u.max(until)));
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
                Arc::new(TenantGuard::new(CircuitBreaker::for_tenant(
                    "servicedesk",
                    tenant_id,
                    self.threshold,
                    self.open_for,
                )))
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

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn spaces_requests_at_the_tenant_rate() {
        let now = 1_000_000;
        // 60/min: one per second, burst 1.
        let (tat, wait) = gcra_step(None, now, 60, 1, Duration::ZERO).unwrap();
        assert_eq!(wait, Duration::ZERO);
        let t = gcra_step(Some(tat), now, 60, 1, Duration::ZERO).unwrap_err();
        assert_eq!(t.retry_in, S);
        let (tat, wait) = gcra_step(Some(tat), now, 60, 1, 2 * S).unwrap();
        assert_eq!(wait, S);
        // Two more calls: the last starts 3 s from now.
        assert_eq!(gcra_step(Some(tat), now, 60, 2, S).unwrap_err().retry_in, 3 * S);
        assert_eq!(
            gcra_step(Some(tat), now + 2000, 60, 1, Duration::ZERO).unwrap().1,
            Duration::ZERO
        );
    }

    #[test]
    fn allows_a_burst_of_one_seconds_worth() {
        let now = 5_000;
        // 600/min: 10 per second, interval 100 ms, burst 10.
        let mut tat = None;
        for _ in 0..10 {
            let (t, wait) = gcra_step(tat, now, 600, 1, Duration::ZERO).unwrap();
            assert_eq!(wait, Duration::ZERO);
            tat = Some(t);
        }
        assert_eq!(
            gcra_step(tat, now, 600, 1, Duration::ZERO).unwrap_err().retry_in,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_low_rate_tenant_still_gets_several_calls_at_once() {
        // 20/min: one call per 3 s, burst 1. Three calls from an idle bucket
        // need 6 s of spacing, more than the 2 s a stage waits in place:
        // granted (refusing would refuse for ever), the stage waits 6 s.
        let now = 1_000_000;
        let (tat, wait) = gcra_step(None, now, 20, 3, 2 * S).unwrap();
        assert_eq!(wait, 6 * S);
        assert_eq!(tat, now + 9_000);
        // The next reservation waits for those calls, and beyond max_wait it
        // is refused with when it may come back.
        let t = gcra_step(Some(tat), now, 20, 3, 2 * S).unwrap_err();
        assert_eq!(t.retry_in, 15 * S);
        assert_eq!(gcra_step(Some(tat), now + 9_000, 20, 3, 2 * S).unwrap().1, 6 * S);
    }

    #[test]
    fn an_old_value_does_not_grant_a_burst_beyond_one_second() {
        // A tenant idle for an hour starts from now, not from its old value.
        let (tat, _) = gcra_step(Some(0), 3_600_000, 60, 1, Duration::ZERO).unwrap();
        assert_eq!(tat, 3_601_000);
    }

    /// A store of one tenant's value, with compare-and-set, for the guard.
    #[derive(Default)]
    struct OneValue(Mutex<HashMap<String, i64>>);

    #[async_trait::async_trait]
    impl SdpRateStore for OneValue {
        async fn sdp_rate_tat(&self, tenant_id: &str) -> Result<Option<i64>, StoreError> {
            Ok(self.0.lock().unwrap().get(tenant_id).copied())
        }
        async fn swap_sdp_rate_tat(
            &self,
            tenant_id: &str,
            expected: Option<i64>,
            new: i64,
        ) -> Result<bool, StoreError> {
            let mut m = self.0.lock().unwrap();
            if m.get(tenant_id).copied() != expected {
                return Ok(false);
            }
            m.insert(tenant_id.to_string(), new);
            Ok(true)
        }
    }

    #[tokio::test]
    async fn two_processes_share_one_budget() {
        let store = OneValue::default();
        let a = SdpGuards::new(3, S, Duration::ZERO);
        let b = SdpGuards::new(3, S, Duration::ZERO);
        // 120/min: burst of 2 between both processes, not 2 each.
        assert!(a
            .tenant("t")
            .reserve(&store, "t", 120, 1, Duration::ZERO)
            .await
            .unwrap()
            .is_ok());
        assert!(b
            .tenant("t")
            .reserve(&store, "t", 120, 1, Duration::ZERO)
            .await
            .unwrap()
            .is_ok());
        assert!(a
            .tenant("t")
            .reserve(&store, "t", 120, 1, Duration::ZERO)
            .await
            .unwrap()
            .is_err());
        assert!(b
            .tenant("t")
            .reserve(&store, "t", 120, 1, Duration::ZERO)
            .await
            .unwrap()
            .is_err());
        // Another tenant has its own budget.
        assert!(b
            .tenant("u")
            .reserve(&store, "u", 120, 1, Duration::ZERO)
            .await
            .unwrap()
            .is_ok());
    }

    #[tokio::test]
    async fn back_off_pushes_the_next_slot() {
        let store = OneValue::default();
        let g = SdpGuards::new(3, S, Duration::ZERO);
        g.tenant("t").back_off(5 * S);
        let t = g
            .tenant("t")
            .reserve(&store, "t", 600, 1, Duration::ZERO)
            .await
            .unwrap()
            .unwrap_err();
        assert!(t.retry_in > 4 * S && t.retry_in <= 5 * S, "{t:?}");
        assert_eq!(
            store.sdp_rate_tat("t").await.unwrap(),
            None,
            "a refused reservation takes nothing"
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
