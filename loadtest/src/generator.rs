//! The open-loop generator: webhooks are sent at their intended times
//! whatever the server does, and latency is measured from the intended
//! time (no coordinated omission). Bounded in count and time.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

/// How the target rate changes over a run.
#[derive(Debug, Clone, Copy)]
pub enum Profile {
    Constant {
        rate: f64,
    },
    /// Linear from `from` to `to` over the run.
    Ramp {
        from: f64,
        to: f64,
    },
    /// `rate`, with `factor`× rate between `at` and `at + len`.
    Burst {
        rate: f64,
        factor: f64,
        at: Duration,
        len: Duration,
    },
}

impl Profile {
    pub fn rate_at(&self, t: Duration, total: Duration) -> f64 {
        match *self {
            Profile::Constant { rate } => rate,
            Profile::Ramp { from, to } => {
                from + (to - from) * (t.as_secs_f64() / total.as_secs_f64().max(1e-9)).min(1.0)
            }
            Profile::Burst { rate, factor, at, len } => {
                if t >= at && t < at + len {
                    rate * factor
                } else {
                    rate
                }
            }
        }
    }

    /// Intended send offsets over `duration`.
    pub fn schedule(&self, duration: Duration, max_count: usize) -> Vec<Duration> {
        let mut out = Vec::new();
        let mut t = 0.0f64;
        let total = duration.as_secs_f64();
        while t < total && out.len() < max_count {
            out.push(Duration::from_secs_f64(t));
            let r = self.rate_at(Duration::from_secs_f64(t), duration).max(0.001);
            t += 1.0 / r;
        }
        out
    }
}

/// What one request came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accepted (HTTP 202) with the job id.
    Accepted { job_id: String },
    /// Any other answer or no answer, by class.
    Error { class: String },
}

/// One request's record.
#[derive(Debug, Clone)]
pub struct Sample {
    pub index: usize,
    /// Intended send time, relative to the run start.
    pub intended: Duration,
    /// From intended send time to the answer.
    pub latency: Duration,
    pub outcome: Outcome,
}

pub struct RunResult {
    pub samples: Vec<Sample>,
    pub started: Instant,
    pub wall: Duration,
    /// Requests the generator could not even start (outstanding bound hit).
    pub not_sent: usize,
}

/// Runs `send(i)` at each intended time; at most `max_outstanding` at once
/// (beyond that the request is counted as `not_sent`, never queued).
pub async fn run<F, Fut>(schedule: &[Duration], max_outstanding: usize, deadline: Duration, send: F) -> RunResult
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let send = Arc::new(send);
    let samples = Arc::new(Mutex::new(Vec::with_capacity(schedule.len())));
    let permits = Arc::new(Semaphore::new(max_outstanding));
    let started = Instant::now();
    let mut not_sent = 0;
    let mut tasks = Vec::with_capacity(schedule.len());
    for (i, offset) in schedule.iter().enumerate() {
        let intended = started + *offset;
        tokio::time::sleep_until(intended.into()).await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            not_sent += 1;
            continue;
        };
        let (send, samples, offset) = (send.clone(), samples.clone(), *offset);
        tasks.push(tokio::spawn(async move {
            let outcome = match tokio::time::timeout(deadline, send(i)).await {
                Ok(o) => o,
                Err(_) => Outcome::Error {
                    class: "timeout".into(),
                },
            };
            let latency = intended.elapsed();
            samples.lock().expect("samples lock").push(Sample {
                index: i,
                intended: offset,
                latency,
                outcome,
            });
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = started.elapsed();
    let mut samples = std::mem::take(&mut *samples.lock().expect("samples lock"));
    samples.sort_by_key(|s| s.index);
    RunResult {
        samples,
        started,
        wall,
        not_sent,
    }
}

/// Closed-loop maximum: `concurrency` workers sending back to back for `duration`.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, send: F) -> (usize, usize, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let send = Arc::new(send);
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bad = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (send, ok, bad, next) = (send.clone(), ok.clone(), bad.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            while start.elapsed() < duration {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if send(i).await {
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    (
        ok.load(std::sync::atomic::Ordering::Relaxed),
        bad.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed(),
    )
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_the_profile() {
        let s = Profile::Constant { rate: 100.0 }.schedule(Duration::from_secs(2), usize::MAX);
        assert_eq!(s.len(), 200);
        let b = Profile::Burst {
            rate: 10.0,
            factor: 10.0,
            at: Duration::from_secs(1),
            len: Duration::from_secs(1),
        }
        .schedule(Duration::from_secs(3), usize::MAX);
        assert!((115..=125).contains(&b.len()), "{}", b.len());
        let capped = Profile::Constant { rate: 1000.0 }.schedule(Duration::from_secs(10), 50);
        assert_eq!(capped.len(), 50);
    }

    #[tokio::test]
    async fn latency_counts_from_the_intended_time() {
        // A server that takes 50 ms: with 1 outstanding allowed, later sends
        // are not sent at all rather than silently delayed.
        let schedule: Vec<Duration> = (0..5).map(|i| Duration::from_millis(i * 10)).collect();
        let r = run(&schedule, 1, Duration::from_secs(1), |_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Outcome::Accepted { job_id: "j".into() }
        })
        .await;
        assert_eq!(r.samples.len() + r.not_sent, 5);
        assert!(r.not_sent >= 3);
        assert!(r.samples.iter().all(|s| s.latency >= Duration::from_millis(50)));
    }
}
