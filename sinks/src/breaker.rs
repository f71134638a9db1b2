//! A circuit breaker: after `threshold` consecutive failures the circuit
//! opens and calls are refused for `open_for`; then one probe is let through
//! (half-open) and its outcome closes or re-opens the circuit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
    /// When the current probe started: a probe whose caller never reported
    /// (cancelled by a timeout) stops blocking new probes after `open_for`.
    probe_started: Option<Instant>,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    system: &'static str,
    /// Set for a per-tenant breaker (whose owner publishes the gauge).
    tenant: Option<String>,
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

/// Returned when the circuit refuses a call.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{system} circuit breaker is open; next probe in {retry_in:?}")]
pub struct CircuitOpen {
    pub system: &'static str,
    pub retry_in: Duration,
}

impl CircuitBreaker {
    pub fn new(system: &'static str, threshold: u32, open_for: Duration) -> Self {
        metrics().circuit_breaker_state.with_label_values(&[system]).set(0);
        CircuitBreaker {
            system,
            tenant: None,
            threshold: threshold.max(1),
            open_for,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                probe_in_flight: false,
                probe_started: None,
            }),
        }
    }

    /// One tenant's breaker for `system`; it leaves the
    /// `ticketflow_circuit_breaker_state` gauge to its owner.
    pub fn for_tenant(system: &'static str, tenant_id: &str, threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            system,
            tenant: Some(tenant_id.to_string()),
            threshold: threshold.max(1),
            open_for,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                probe_in_flight: false,
                probe_started: None,
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.inner.lock().expect("breaker lock").state
    }

    fn set(&self, inner: &mut Inner, state: BreakerState) {
        if inner.state != state {
            tracing::warn!(system = self.system, tenant_id = self.tenant.as_deref().unwrap_or("*"), from = ?inner.state, to = ?state, "circuit breaker state change");
        }
        inner.state = state;
        if self.tenant.is_some() {
            return;
        }
        let v = match state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        metrics().circuit_breaker_state.with_label_values(&[self.system]).set(v);
    }

    /// Asks to make a call. `Ok` means go ahead and report the outcome.
    pub fn acquire(&self) -> Result<(), CircuitOpen> {
        let mut inner = self.inner.lock().expect("breaker lock");
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let elapsed = inner.opened_at.map(|t| t.elapsed()).unwrap_or_default();
                if elapsed >= self.open_for {
                    self.set(&mut inner, BreakerState::HalfOpen);
                    inner.probe_in_flight = true;
                    inner.probe_started = Some(Instant::now());
                    Ok(())
                } else {
                    Err(CircuitOpen {
                        system: self.system,
                        retry_in: self.open_for - elapsed,
                    })
                }
            }
            BreakerState::HalfOpen
                if !inner.probe_in_flight || inner.probe_started.is_some_and(|t| t.elapsed() >= self.open_for) =>
            {
                inner.probe_in_flight = true;
                inner.probe_started = Some(Instant::now());
                Ok(())
            }
            BreakerState::HalfOpen => Err(CircuitOpen {
                system: self.system,
                retry_in: Duration::from_secs(1),
            }),
        }
    }

    pub fn record_success(&self) {
        let mut inner = self.inner.lock().expect("breaker lock");
        inner.consecutive_failures = 0;
        inner.probe_in_flight = false;
        self.set(&mut inner, BreakerState::Closed);
    }

    /// Reports a failure that says something about the peer's health (not,
    /// say, a 400 about one bad input).
    pub fn record_failure(&self) {
        let mut inner = self.inner.lock().expect("breaker lock");
        inner.consecutive_failures += 1;
        inner.probe_in_flight = false;
        if inner.state == BreakerState::HalfOpen || inner.consecutive_failures >= self.threshold {
            inner.opened_at = Some(Instant::now());
            self.set(&mut inner, BreakerState::Open);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_timeout_and_closes_on_success() {
        let b = CircuitBreaker::new("test", 3, Duration::from_millis(50));
        for _ in 0..2 {
            b.acquire().unwrap();
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.acquire().unwrap();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire().is_err());
        std::thread::sleep(Duration::from_millis(60));
        b.acquire().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.acquire().is_err(), "only one probe at a time");
        // A probe that never reports (its caller was cancelled) does not
        // block probing forever.
        std::thread::sleep(Duration::from_millis(60));
        b.acquire().unwrap();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(60));
        b.acquire().unwrap();
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        b.acquire().unwrap();
    }
}
