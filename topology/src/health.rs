//! What this process knows about its own health, beyond "the broker and
//! the store answer": a stage task that died, a producer that is fatally
//! broken, an embedded broker that stopped, and a stage that holds no
//! partition while its group has lag and no other member to take it.
//!
//! Each shows on `/health/ready` as a `503` with the reason. A process that
//! cannot recover by itself exits non-zero (see [`Watchdog::fatal`]) so its
//! supervisor (systemd, Kubernetes) restarts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use processors::producer::DurableProducer;
use processors::runtime::StageProbe;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::kafka::KafkaFactory;

/// How long a stage may hold no partition while its group has lag and no
/// other member before readiness fails (a rebalance takes the session
/// timeout, 10 s, plus the broker's initial delay at most).
pub const UNASSIGNED_GRACE: Duration = Duration::from_secs(30);
/// ... and before the process gives up and exits.
pub const UNASSIGNED_FATAL: Duration = Duration::from_secs(120);
/// How long a dead stage task or a failed broker is shown on readiness
/// before the process exits.
pub const DEAD_FATAL: Duration = Duration::from_secs(5);
/// How long the producer may stay broken (recreation failing) before the
/// process exits.
pub const PRODUCER_FATAL: Duration = Duration::from_secs(60);
/// A broken producer that no send has tripped over is recreated by the
/// watchdog after this long.
pub const PRODUCER_RECREATE_AFTER: Duration = Duration::from_secs(5);

/// One stage this process runs.
pub struct StageHealth {
    pub name: &'static str,
    pub group: String,
    pub probe: Arc<StageProbe>,
}

/// The health state of one process, shared by readiness and the watchdog.
pub struct ProcessHealth {
    stages: Vec<StageHealth>,
    producer: Arc<DurableProducer>,
    broker_failed: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Problems found, by check name: (reason, since).
    problems: Mutex<HashMap<String, (String, Instant)>>,
    unassigned_grace: Duration,
    unassigned_fatal: Duration,
}

impl ProcessHealth {
    pub fn new(
        stages: Vec<StageHealth>,
        producer: Arc<DurableProducer>,
        broker_failed: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    ) -> Arc<Self> {
        Arc::new(ProcessHealth {
            stages,
            producer,
            broker_failed,
            problems: Mutex::new(HashMap::new()),
            unassigned_grace: UNASSIGNED_GRACE,
            unassigned_fatal: UNASSIGNED_FATAL,
        })
    }

    /// The same with other bounds for a stage without partitions (tests).
    pub fn with_unassigned_bounds(
        stages: Vec<StageHealth>,
        producer: Arc<DurableProducer>,
        grace: Duration,
        fatal: Duration,
    ) -> Arc<Self> {
        Arc::new(ProcessHealth {
            stages,
            producer,
            broker_failed: None,
            problems: Mutex::new(HashMap::new()),
            unassigned_grace: grace,
            unassigned_fatal: fatal,
        })
    }

    /// Records that a stage task ended while the process was not stopping.
    pub fn stage_died(&self, stage: &str, reason: String) {
        error!(stage, reason = %reason, "stage task ended; the process will exit so it is restarted");
        self.set(&format!("stage:{stage}"), Some(reason));
        self.export_stage_ready();
    }

    fn set(&self, check: &str, problem: Option<String>) {
        let mut p = self.problems.lock().expect("health lock");
        match problem {
            Some(reason) => {
                let since = p.get(check).map_or_else(Instant::now, |(_, s)| *s);
                p.insert(check.to_string(), (reason, since));
            }
            None => {
                p.remove(check);
            }
        }
    }

    /// The current problems: (check, reason, how long).
    pub fn problems(&self) -> Vec<(String, String, Duration)> {
        let mut out: Vec<_> = self
            .problems
            .lock()
            .expect("health lock")
            .iter()
            .map(|(k, (r, since))| (k.clone(), r.clone(), since.elapsed()))
            .collect();
        out.sort();
        out
    }

    /// The first problem that the process cannot recover from by itself.
    pub fn fatal(&self) -> Option<String> {
        self.problems().into_iter().find_map(|(check, reason, age)| {
            let limit = if check.starts_with("stage:") || check == "broker" {
                DEAD_FATAL
            } else if check == "producer" {
                PRODUCER_FATAL
            } else if check.starts_with("unassigned:") {
                self.unassigned_fatal
            } else {
                return None;
            };
            (age >= limit).then(|| format!("{check}: {reason} (for {} s)", age.as_secs()))
        })
    }

    /// Checks the producer, the broker and the stages' assignments once.
    pub async fn check(&self, factory: &KafkaFactory, lag_of_group: &HashMap<String, i64>) {
        let producer = self.producer.health().err();
        // A fatally broken producer with no traffic to trip over it is
        // replaced here once it has shown on readiness for a while.
        if producer.is_some()
            && self
                .problems()
                .iter()
                .any(|(c, _, age)| c == "producer" && *age >= PRODUCER_RECREATE_AFTER)
        {
            self.producer.recover().await;
        }
        self.set("producer", self.producer.health().err());
        if let Some(failed) = &self.broker_failed {
            self.set(
                "broker",
                failed().then(|| "the embedded broker stopped serving".to_string()),
            );
        }
        for s in &self.stages {
            let check = format!("unassigned:{}", s.name);
            if !s.probe.is_running() || s.probe.assigned() > 0 {
                self.set(&check, None);
                continue;
            }
            let lag = lag_of_group.get(&s.group).copied().unwrap_or(0);
            if lag == 0 {
                self.set(&check, None);
                continue;
            }
            let members = group_members(factory, &s.group).await;
            match members {
                Some(n) if n <= 1 => self.set(
                    &check,
                    Some(format!(
                        "stage {} holds no partition while group {} has lag {lag} and no other member",
                        s.name, s.group
                    )),
                ),
                _ => self.set(&check, None),
            }
        }
        self.export_stage_ready();
    }

    /// `ticketflow_stage_ready{stage}`: what readiness says of each stage.
    fn export_stage_ready(&self) {
        for (name, result) in ingest::ProcessChecks::checks(self) {
            if let Some(stage) = name.strip_prefix("stage:") {
                sinks::metrics::metrics()
                    .stage_ready
                    .with_label_values(&[stage])
                    .set(i64::from(result.is_ok()));
            }
        }
    }
}

impl ingest::ProcessChecks for ProcessHealth {
    fn checks(&self) -> Vec<(String, Result<(), String>)> {
        let problems = self.problems();
        let mut out: Vec<(String, Result<(), String>)> = Vec::new();
        for s in &self.stages {
            let name = format!("stage:{}", s.name);
            let problem = problems
                .iter()
                .find(|(c, _, age)| {
                    *c == name || (*c == format!("unassigned:{}", s.name) && *age >= self.unassigned_grace)
                })
                .map(|(_, r, _)| r.clone());
            out.push((name, problem.map_or(Ok(()), Err)));
        }
        let of = |check: &str| problems.iter().find(|(c, _, _)| c == check).map(|(_, r, _)| r.clone());
        // Read now, not at the last watchdog turn.
        out.push(("producer".into(), self.producer.health()));
        if self.broker_failed.is_some() {
            out.push(("embedded_broker".into(), of("broker").map_or(Ok(()), Err)));
        }
        out
    }
}

/// Members of a consumer group, as the coordinator sees them.
async fn group_members(factory: &KafkaFactory, group: &str) -> Option<usize> {
    let (factory, group) = (factory.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = factory.base().create().ok()?;
        let list = c.fetch_group_list(Some(&group), Duration::from_secs(5)).ok()?;
        Some(list.groups().iter().map(|g| g.members().len()).sum())
    })
    .await
    .ok()
    .flatten()
}

/// Runs the checks every `every` until `stop`; cancels `fatal` with the
/// reason when the process should exit.
pub struct Watchdog;

impl Watchdog {
    pub fn spawn(
        health: Arc<ProcessHealth>,
        ops: Arc<crate::ops::KafkaOps>,
        every: Duration,
        stop: CancellationToken,
        fatal: tokio::sync::watch::Sender<Option<String>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                // Lag is read only when a running stage holds no partition.
                let idle = health
                    .stages
                    .iter()
                    .any(|s| s.probe.is_running() && s.probe.assigned() == 0);
                let lag = if idle {
                    match ops.lag_totals().await {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(error = %e, "health: lag unavailable");
                            HashMap::new()
                        }
                    }
                } else {
                    HashMap::new()
                };
                health.check(&ops.factory, &lag).await;
                for (check, reason, age) in health.problems() {
                    warn!(check, reason = %reason, for_s = age.as_secs(), "not ready");
                }
                if let Some(reason) = health.fatal() {
                    error!(reason = %reason, "cannot recover; exiting so the supervisor restarts this process");
                    let _ = fatal.send(Some(reason));
                    return;
                }
            }
        })
    }
}
