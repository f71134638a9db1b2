//! Per-tenant token buckets for webhook ingest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct TenantLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl TenantLimiter {
    pub fn new(rate_per_sec: f64) -> Self {
        TenantLimiter {
            rate: rate_per_sec,
            burst: (rate_per_sec * 2.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token; `Err(seconds)` says when one will be available.
    pub fn check(&self, tenant: &str) -> Result<(), u64> {
        let mut b = self.buckets.lock().expect("limiter lock");
        let now = Instant::now();
        let (tokens, last) = b.entry(tenant.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_empties_then_refuses() {
        let l = super::TenantLimiter::new(2.0);
        for _ in 0..4 {
            l.check("a").unwrap();
        }
        assert!(l.check("a").is_err());
        assert!(l.check("b").is_ok(), "tenants have separate buckets");
    }
}
