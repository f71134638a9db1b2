//! Operator actions over Kafka: consumer lag, dead-letter topics (list,
//! show, retry) and replay. Used by the CLI and, through
//! [`ingest::Operations`], by the admin API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use processors::headers::JobHeaders;
use processors::stages::Services;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use schemas::{Codec, FailureEnvelope, WebhookReceived};
use serde_json::{json, Value};
use sinks::breaker::BreakerState;
use sinks::metrics::metrics;
use sinks::now_ms;

use crate::dataflow::{Dataflow, STAGES};
use crate::kafka::KafkaFactory;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaOps {
    pub factory: KafkaFactory,
    pub dataflow: Dataflow,
    /// The stage services of this process, when it runs stages.
    pub services: Option<Arc<Services>>,
}

/// One record read back from a topic.
struct ReadRecord {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<String>,
    headers: Option<OwnedHeaders>,
    value: Vec<u8>,
}

fn partitions_of(c: &BaseConsumer, topic: &str) -> Result<Vec<i32>, String> {
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

fn header_of(h: &Option<OwnedHeaders>, name: &str) -> Option<String> {
    h.as_ref()?
        .iter()
        .find(|x| x.key == name)
        .and_then(|x| x.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn envelope_json(r: &ReadRecord) -> Value {
    let env = Codec::builtin().decode::<FailureEnvelope>(&r.value);
    let mut v = json!({
        "partition": r.partition,
        "offset": r.offset,
        "timestamp_ms": r.timestamp_ms,
        "key": r.key,
        "headers": {
            "correlation_id": header_of(&r.headers, "correlation_id"),
            "tenant_id": header_of(&r.headers, "tenant_id"),
            "job_id": header_of(&r.headers, "job_id"),
            "attempt": header_of(&r.headers, "attempt"),
            "error": header_of(&r.headers, "error"),
            "error_class": header_of(&r.headers, "error_class"),
            "failed_stage": header_of(&r.headers, "failed_stage"),
            "original_topic": header_of(&r.headers, "original_topic"),
        },
    });
    match env {
        Ok(e) => {
            v["envelope"] = json!({
                "job_id": e.job_id, "correlation_id": e.correlation_id, "tenant_id": e.tenant_id, "ticket_id": e.ticket_id,
                "failed_stage": e.failed_stage, "error": e.error, "error_class": e.error_class, "attempt": e.attempt,
                "original_topic": e.original_topic, "original_partition": e.original_partition, "original_offset": e.original_offset,
                "failed_at_ms": e.failed_at_ms, "payload_bytes": e.payload.len(),
                "payload_record": Codec::builtin().record_name(&e.payload).ok(),
            });
        }
        Err(e) => v["decode_error"] = json!(e.to_string()),
    }
    v
}

impl KafkaOps {
    fn blocking<T: Send + 'static>(
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

    /// Lag of every stage group on each of its input topics; also updates
    /// the `ticketflow_consumer_lag*` gauges.
    pub async fn lag_report(&self) -> Result<Value, String> {
        self.lag(true).await
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
                        metrics().consumer_lag.with_label_values(&[&group, &input.topic, &p.to_string()]).set(lag);
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
                    if with_age {
                        metrics().consumer_lag_seconds.with_label_values(&[&group, &input.topic]).set(topic_oldest.unwrap_or(0.0));
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

    /// The last `limit` records of a stage's DLQ.
    pub async fn dlq_records(&self, stage: &str, limit: usize) -> Result<Value, String> {
        let stage = stage.to_string();
        self.blocking(move |factory, dataflow| {
            let topic = dataflow.dlq(&stage);
            let c = factory.reader(None).map_err(|e| e.to_string())?;
            let mut all = Vec::new();
            for p in partitions_of(&c, &topic)? {
                let (low, high) = c.fetch_watermarks(&topic, p, TIMEOUT).map_err(|e| e.to_string())?;
                let from = high.saturating_sub(i64::try_from(limit).unwrap_or(i64::MAX)).max(low);
                all.extend(read_range(&c, &topic, p, from, high, limit)?);
            }
            all.sort_by_key(|r| r.timestamp_ms.unwrap_or(0));
            let skip = all.len().saturating_sub(limit);
            let records: Vec<Value> = all[skip..].iter().map(envelope_json).collect();
            Ok(json!({"topic": topic, "count": records.len(), "records": records}))
        })
        .await
    }

    /// One DLQ record by its partition and offset, read directly.
    pub async fn dlq_record(&self, stage: &str, partition: i32, offset: i64) -> Result<Option<Value>, String> {
        let stage = stage.to_string();
        self.blocking(move |factory, dataflow| {
            let topic = dataflow.dlq(&stage);
            let c = factory.reader(None).map_err(|e| e.to_string())?;
            if !partitions_of(&c, &topic)?.contains(&partition) {
                return Ok(None);
            }
            let (low, high) = c
                .fetch_watermarks(&topic, partition, TIMEOUT)
                .map_err(|e| e.to_string())?;
            if offset < low || offset >= high {
                return Ok(None);
            }
            let recs = read_range(&c, &topic, partition, offset, offset + 1, 1)?;
            Ok(recs.iter().find(|r| r.offset == offset).map(envelope_json))
        })
        .await
    }

    /// Re-sends dead-lettered records to the input topic they failed on, as
    /// attempt 1. Without `offsets`, every record not retried before (the
    /// group `<prefix>.dlq-retry.<stage>` remembers how far it got).
    pub async fn dlq_retry_records(&self, stage: &str, offsets: Option<Vec<(i32, i64)>>) -> Result<Value, String> {
        let stage_s = stage.to_string();
        let (selected, commit) = self
            .blocking(move |factory, dataflow| {
                let topic = dataflow.dlq(&stage_s);
                let group = format!("{}.dlq-retry.{stage_s}", dataflow.prefix);
                let c = factory.reader(Some(&group)).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                if let Some(list) = offsets {
                    for (p, o) in list {
                        let recs = read_range(&c, &topic, p, o, o + 1, 1)?;
                        if recs.is_empty() {
                            return Err(format!("no record at {topic}/{p}@{o}"));
                        }
                        out.extend(recs);
                    }
                    return Ok((out, None));
                }
                let ps = partitions_of(&c, &topic)?;
                let mut tpl = TopicPartitionList::new();
                for p in &ps {
                    tpl.add_partition(&topic, *p);
                }
                let committed = c.committed_offsets(tpl, TIMEOUT).map_err(|e| e.to_string())?;
                let mut commit = TopicPartitionList::new();
                for p in ps {
                    let (low, high) = c.fetch_watermarks(&topic, p, TIMEOUT).map_err(|e| e.to_string())?;
                    let from = committed
                        .find_partition(&topic, p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        .unwrap_or(low)
                        .max(low);
                    out.extend(read_range(&c, &topic, p, from, high, usize::MAX)?);
                    commit
                        .add_partition_offset(&topic, p, Offset::Offset(high))
                        .map_err(|e| e.to_string())?;
                }
                Ok((out, Some(commit)))
            })
            .await?;
        let producer = self
            .factory
            .producer(Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        let mut resent = 0;
        let mut skipped = Vec::new();
        for r in &selected {
            let env = match Codec::builtin().decode::<FailureEnvelope>(&r.value) {
                Ok(e) if e.tenant_id != "unknown" && !e.original_topic.is_empty() => e,
                Ok(_) => {
                    skipped.push(json!({"partition": r.partition, "offset": r.offset, "reason": "poison record without job headers"}));
                    continue;
                }
                Err(e) => {
                    skipped.push(json!({"partition": r.partition, "offset": r.offset, "reason": e.to_string()}));
                    continue;
                }
            };
            let headers = JobHeaders {
                correlation_id: env.correlation_id.clone(),
                tenant_id: env.tenant_id.clone(),
                job_id: env.job_id.clone(),
                traceparent: header_of(&r.headers, "traceparent").unwrap_or_else(processors::headers::new_traceparent),
                attempt: 1,
                replayed_from: header_of(&r.headers, "replayed_from"),
            };
            let key = r
                .key
                .clone()
                .unwrap_or_else(|| format!("{}:{}", env.tenant_id, env.ticket_id));
            let from = format!("{}/{}@{}", self.dataflow.dlq(stage), r.partition, r.offset);
            let kafka_headers = headers.to_kafka().insert(Header {
                key: "retried_from",
                value: Some(&from),
            });
            producer
                .send(
                    FutureRecord::to(&env.original_topic)
                        .key(&key)
                        .payload(&env.payload)
                        .headers(kafka_headers),
                    Timeout::After(TIMEOUT),
                )
                .await
                .map_err(|(e, _)| format!("re-sending {from}: {e}"))?;
            resent += 1;
        }
        // Remembered only after every record was re-sent: a failure above retries them all next time.
        if let Some(commit) = commit {
            let stage = stage.to_string();
            self.blocking(move |factory, dataflow| {
                let group = format!("{}.dlq-retry.{stage}", dataflow.prefix);
                let c = factory.reader(Some(&group)).map_err(|e| e.to_string())?;
                c.commit(&commit, rdkafka::consumer::CommitMode::Sync)
                    .map_err(|e| format!("remembering retried DLQ records: {e}"))
            })
            .await?;
        }
        Ok(json!({"stage": stage, "resent": resent, "skipped": skipped}))
    }

    /// Re-enqueues webhooks received in `[from_ms, to_ms)` as new jobs (new
    /// job ids, so they are enhanced again), optionally only one tenant's or
    /// one ticket's. Record timestamps are searched directly rather than
    /// trusting the broker's offset-for-time answer (tansu answers 0).
    pub async fn replay(
        &self,
        from_ms: i64,
        to_ms: i64,
        tenant: Option<String>,
        ticket: Option<String>,
        dry_run: bool,
    ) -> Result<Value, String> {
        let (records, topic) = self
            .blocking(move |factory, dataflow| {
                let topic = dataflow.webhooks();
                let c = factory.reader(None).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                for p in partitions_of(&c, &topic)? {
                    let (low, high) = c.fetch_watermarks(&topic, p, TIMEOUT).map_err(|e| e.to_string())?;
                    let start = first_offset_at(&c, &topic, p, low, high, from_ms)?;
                    for r in read_range(&c, &topic, p, start, high, usize::MAX)? {
                        let Ok(w) = Codec::builtin().decode::<WebhookReceived>(&r.value) else {
                            continue;
                        };
                        let at = w.meta.received_at_ms;
                        if at < from_ms || at >= to_ms {
                            continue;
                        }
                        if tenant.as_ref().is_some_and(|t| *t != w.meta.tenant_id)
                            || ticket.as_ref().is_some_and(|t| *t != w.meta.ticket_id)
                        {
                            continue;
                        }
                        out.push((r, w));
                    }
                }
                Ok((out, topic))
            })
            .await?;
        let mut jobs = Vec::new();
        if !dry_run {
            let producer = self
                .factory
                .producer(Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
            for (r, mut w) in records.iter().map(|(r, w)| (r, w.clone())) {
                let original_job = w.meta.job_id.clone();
                w.meta.job_id = uuid::Uuid::now_v7().to_string();
                w.meta.received_at_ms = now_ms();
                let headers = JobHeaders {
                    correlation_id: w.meta.correlation_id.clone(),
                    tenant_id: w.meta.tenant_id.clone(),
                    job_id: w.meta.job_id.clone(),
                    traceparent: processors::headers::new_traceparent(),
                    attempt: 1,
                    replayed_from: Some(format!("{topic}/{}@{}", r.partition, r.offset)),
                }
                .to_kafka();
                let value = Codec::builtin().encode(&w).map_err(|e| e.to_string())?;
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .key(&w.meta.key())
                            .payload(&value)
                            .headers(headers),
                        Timeout::After(TIMEOUT),
                    )
                    .await
                    .map_err(|(e, _)| format!("replay produce: {e}"))?;
                jobs.push(json!({"original_job_id": original_job, "job_id": w.meta.job_id, "tenant_id": w.meta.tenant_id, "ticket_id": w.meta.ticket_id}));
            }
        } else {
            for (_, w) in &records {
                jobs.push(json!({"original_job_id": w.meta.job_id, "tenant_id": w.meta.tenant_id, "ticket_id": w.meta.ticket_id}));
            }
        }
        Ok(json!({"topic": topic, "matched": records.len(), "dry_run": dry_run, "jobs": jobs}))
    }
}

/// The first offset in `[low, high)` whose record timestamp is at or after
/// `at_ms`, by binary search over record timestamps (which grow with offset
/// within a partition for records written by ingest).
fn first_offset_at(c: &BaseConsumer, topic: &str, p: i32, low: i64, high: i64, at_ms: i64) -> Result<i64, String> {
    let (mut lo, mut hi) = (low, high);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let recs = read_range(c, topic, p, mid, mid + 1, 1)?;
        let ts = recs.first().and_then(|r| r.timestamp_ms).unwrap_or(i64::MAX);
        if ts < at_ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[async_trait]
impl ingest::Operations for KafkaOps {
    async fn lag(&self) -> Result<Value, String> {
        self.lag_report().await
    }
    async fn dlq_list(&self, stage: &str, limit: usize) -> Result<Value, String> {
        self.dlq_records(stage, limit).await
    }
    async fn dlq_retry(&self, stage: &str, offsets: Option<Vec<(i32, i64)>>) -> Result<Value, String> {
        self.dlq_retry_records(stage, offsets).await
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
