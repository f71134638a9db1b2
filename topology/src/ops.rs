//! Operator actions over Kafka: consumer lag here; dead-letter topics (list,
//! show, retry) and replay in [`crate::replay`]. Used by the CLI and,
//! through [`ingest::Operations`], by the admin API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use processors::stages::Services;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use sinks::breaker::BreakerState;
use sinks::now_ms;

use crate::dataflow::{Dataflow, STAGES};
use crate::kafka::KafkaFactory;
use crate::replay::reader::ReadRecord;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaOps {
    pub factory: KafkaFactory,
    pub dataflow: Dataflow,
    /// The stage services of this process, when it runs stages.
    pub services: Option<Arc<Services>>,
    /// This process's lag monitor (sliding window, verdicts), when it runs one.
    pub monitor: Option<Arc<crate::lag::LagMonitor>>,
}

pub(crate) fn partitions_of(c: &BaseConsumer, topic: &str) -> Result<Vec<i32>, String> {
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| format!("metadata for {topic}: {e}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("topic {topic} does not exist"))?;
    if let Some(e) = t.error() {
        return Err(format!("topic {topic}: {e:?} (run `ticketflow topics create`?)"));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// Reads `[from, to)` of one partition (bounded by `max` records).
fn read_range(
    c: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    max: usize,
) -> Result<Vec<ReadRecord>, String> {
    let mut out = Vec::new();
    if from >= to {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| e.to_string())?;
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < max && std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                if m.offset() >= to {
                    break;
                }
                out.push(ReadRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    headers: m.headers().map(|h| h.detach()),
                    value: m.payload().unwrap_or_default().to_vec(),
                });
                if m.offset() + 1 >= to {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(format!("reading {topic}/{partition}: {e}")),
            None => {}
        }
    }
    Ok(out)
}

impl KafkaOps {
    /// Runs `f` on a blocking thread with this process's client factory and dataflow.
    pub(crate) fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(KafkaFactory, Dataflow) -> Result<T, String> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, String>> {
        let (factory, dataflow) = (self.factory.clone(), self.dataflow.clone());
        async move {
            tokio::task::spawn_blocking(move || f(factory, dataflow))
                .await
                .map_err(|e| e.to_string())?
        }
    }

    /// Lag of every stage group with its verdict (see [`crate::lag`]): from
    /// this process's monitor when it runs one (its window), else from one
    /// sample taken now (verdicts then rest on the lag alone). Updates the
    /// lag gauges.
    pub async fn lag_report(&self) -> Result<Value, String> {
        if let Some(m) = &self.monitor {
            if m.stages().len() == STAGES.len() {
                m.sample_if_older(Duration::from_secs(1)).await?;
                return Ok(m.report());
            }
        }
        let once = crate::lag::LagMonitor::new(
            self.factory.clone(),
            self.dataflow.clone(),
            STAGES.to_vec(),
            crate::lag::LagSettings::default(),
        );
        once.sample_now().await?;
        Ok(once.report())
    }

    /// Total lag per consumer group (no ages), for health checks.
    pub async fn lag_totals(&self) -> Result<std::collections::HashMap<String, i64>, String> {
        let report = self.lag(false).await?;
        Ok(report["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| Some((g["group"].as_str()?.to_string(), g["total_lag"].as_i64()?)))
            .collect())
    }

    /// The same without the age of the oldest unconsumed record: that read
    /// costs a fetch per lagging partition (the broker reads from the offset
    /// to the high watermark), too much to sample every second under load.
    pub async fn lag_counts(&self) -> Result<Value, String> {
        self.lag(false).await
    }

    async fn lag(&self, with_age: bool) -> Result<Value, String> {
        self.blocking(move |factory, dataflow| {
            let mut groups = Vec::new();
            for stage in STAGES {
                let group = dataflow.group(stage);
                let wiring = dataflow.wiring(stage, 1, Duration::ZERO);
                let c = factory.peeker(Some(&group)).map_err(|e| e.to_string())?;
                let mut total = 0i64;
                let mut oldest_age: Option<f64> = None;
                let mut parts = Vec::new();
                for input in &wiring.inputs {
                    let Ok(ps) = partitions_of(&c, &input.topic) else { continue };
                    let mut tpl = TopicPartitionList::new();
                    for p in &ps {
                        tpl.add_partition(&input.topic, *p);
                    }
                    let committed = c.committed_offsets(tpl, TIMEOUT).map_err(|e| format!("committed offsets of {group}: {e}"))?;
                    let mut topic_oldest: Option<f64> = None;
                    for p in ps {
                        let (low, high) = c.fetch_watermarks(&input.topic, p, TIMEOUT).map_err(|e| format!("watermarks of {}/{p}: {e}", input.topic))?;
                        let committed_off = committed
                            .find_partition(&input.topic, p)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            });
                        let position = committed_off.unwrap_or(low).max(low);
                        let lag = (high - position).max(0);
                        total += lag;
                        let mut age = None;
                        if lag > 0 && with_age {
                            if let Ok(recs) = read_range(&c, &input.topic, p, position, position + 1, 1) {
                                age = recs.first().and_then(|r| r.timestamp_ms).map(|ts| ((now_ms() - ts).max(0)) as f64 / 1000.0);
                            }
                        }
                        if let Some(a) = age {
                            topic_oldest = Some(topic_oldest.map_or(a, |o: f64| o.max(a)));
                        }
                        parts.push(json!({"topic": input.topic, "partition": p, "committed": committed_off, "low": low, "high": high, "lag": lag, "oldest_unconsumed_age_seconds": age}));
                    }
                    if let Some(a) = topic_oldest {
                        oldest_age = Some(oldest_age.map_or(a, |o: f64| o.max(a)));
                    }
                }
                groups.push(json!({"group": group, "stage": stage, "total_lag": total, "oldest_unconsumed_age_seconds": oldest_age, "partitions": parts}));
            }
            Ok(json!({"at_ms": now_ms(), "groups": groups}))
        })
        .await
    }
}

#[async_trait]
impl ingest::Operations for KafkaOps {
    async fn lag(&self) -> Result<Value, String> {
        self.lag_report().await
    }
    async fn dlq_list(&self, stage: &str, limit: usize) -> Result<Value, String> {
        self.dlq_records(stage, limit).await
    }
    async fn dlq_retry(&self, stage: &str, request: ingest::DlqRetryRequest) -> Result<Value, String> {
        let opts = crate::replay::DlqRetryOptions {
            records: request.records,
            filter: crate::replay::Filter {
                tenant: request.tenant,
                ticket: request.ticket,
                error_class: request
                    .error_class
                    .as_deref()
                    .map(crate::replay::ErrorClass::parse)
                    .transpose()?,
                from_ms: request.from_ms,
                to_ms: request.to_ms,
            },
            dry_run: request.dry_run,
            ..Default::default()
        };
        self.dlq_retry_with(stage, &opts, &mut |_| {}).await.into_result()
    }
    async fn kafka_ok(&self) -> Result<(), String> {
        self.blocking(|factory, _| {
            let c = factory.reader(None).map_err(|e| e.to_string())?;
            c.fetch_metadata(None, Duration::from_secs(3))
                .map(|_| ())
                .map_err(|e| format!("broker unreachable: {e}"))
        })
        .await
    }
    fn external_checks(&self) -> Vec<(&'static str, bool, String)> {
        let Some(s) = &self.services else {
            return vec![];
        };
        let state = |b: BreakerState| match b {
            BreakerState::Closed => (true, "circuit closed".to_string()),
            BreakerState::HalfOpen => (false, "circuit half-open (probing)".to_string()),
            BreakerState::Open => (false, "circuit open after repeated failures".to_string()),
        };
        let (llm_ok, mut llm) = state(s.llm_breaker.state());
        if s.settings.disable_llm {
            llm = "disabled (DISABLE_LLM_SYNTHESIS=true); fallback formatting in use".into();
        }
        let not_closed = s.sdp_guards.not_closed();
        let (sdp_ok, sdp) = if not_closed.is_empty() {
            (true, "circuit closed for every tenant".to_string())
        } else {
            let list: Vec<String> = not_closed
                .iter()
                .map(|(t, st)| format!("{t} ({})", state(*st).1))
                .collect();
            (false, format!("circuit not closed for tenant(s): {}", list.join(", ")))
        };
        vec![
            ("llm", llm_ok || s.settings.disable_llm, llm),
            ("servicedesk", sdp_ok, sdp),
        ]
    }
}
