//! The runtime every stage runs on.
//!
//! One consumer per stage process, in group `<prefix>.<stage>`, subscribed
//! to the stage's input topic(s) and its retry tiers. For each record:
//!
//! 1. The [`Tracker`] takes it: records with different keys run
//!    concurrently, records with the same key wait in order.
//! 2. A retry-tier record that is not due yet is held and its partition
//!    paused until `not_before` — no task sleeps on it. Records of one tier
//!    are due in the order they were written, so nothing behind the held
//!    one is due earlier. The exception is a record whose `Retry-After` was
//!    longer than its tier's delay: it is set aside instead (counted in
//!    flight, so no offset is committed past it) and the partition keeps
//!    flowing, so one tenant's long `Retry-After` does not hold up another
//!    tenant's retries. At most a quarter of `max_in_flight` records are set
//!    aside; beyond that the partition pauses on them too.
//! 3. The stage runs; its output goes to the next topic, a retryable
//!    failure to the next retry tier (or the DLQ after the last), a
//!    permanent failure straight to the DLQ. Producing is retried until the
//!    broker acknowledges: a record is never finished without its output.
//! 4. The offset is stored only up to the first unfinished record;
//!    auto-commit sends what is stored.
//!
//! Backpressure: at most `max_in_flight` records run at once; up to as many
//! again are taken and wait their turn ([`BUFFER_FACTOR`]), so the work
//! never stops while a resumed partition is fetched again. At that many
//! records taken, or `max_in_flight_bytes` of payload, the stage pauses its
//! assigned partitions, and resumes them when both are back under half. The consumer is polled all the while (at least
//! once a second), so a long stall in a downstream system never exceeds
//! `max.poll.interval.ms` and rebalances are served while paused;
//! librdkafka's own prefetch is capped at 16 MiB. Memory therefore stays
//! bounded however large the backlog. On revoke the revoked partitions drain
//! (bounded, off the runtime's worker threads) and commit
//! (Consuming → Draining → Complete); on shutdown all of them do.
//!
//! A record whose output the broker refuses for good (too large, topic
//! unknown or forbidden) goes to the dead-letter topic with the reason,
//! never into an endless retry.

pub mod tracker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use schemas::{Codec, FailureEnvelope};
use sinks::metrics::metrics;
use sinks::{now_ms, RetryHint};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::headers::{FailureHeaders, JobHeaders};
use crate::producer::{DurableProducer, ProduceError};
use crate::trace;
use tracker::{Taken, Ticket, TopicPartition, Tracker};

/// What a stage got.
pub struct StageInput<'a> {
    pub value: &'a [u8],
    pub key: &'a str,
    pub headers: &'a JobHeaders,
    /// 1 on the first try, n on the n-th.
    pub attempt: i32,
    pub topic: &'a str,
}

impl StageInput<'_> {
    /// The ticket id part of the `tenant:ticket` key.
    pub fn ticket_id(&self) -> &str {
        self.key.split_once(':').map(|(_, t)| t).unwrap_or(self.key)
    }
}

/// What a stage produced.
#[derive(Debug)]
pub enum StageOutput {
    /// Send this value to the stage's output topic.
    Forward(Vec<u8>),
    /// Nothing to send: the job ends here (record stage, skipped events).
    Done,
}

/// A failed record, classified where the error was born.
#[derive(Debug, Clone)]
pub struct StageFailure {
    pub error: String,
    pub hint: RetryHint,
}

impl StageFailure {
    pub fn permanent(error: impl Into<String>) -> Self {
        StageFailure {
            error: error.into(),
            hint: RetryHint::Permanent,
        }
    }
    pub fn retryable(error: impl Into<String>, after: Option<Duration>) -> Self {
        StageFailure {
            error: error.into(),
            hint: RetryHint::Retryable { after },
        }
    }
    /// Deferred by a rate limit; does not use up an attempt.
    pub fn throttled(error: impl Into<String>, after: Duration) -> Self {
        StageFailure {
            error: error.into(),
            hint: RetryHint::Throttled { after },
        }
    }
}

#[async_trait]
pub trait Stage: Send + Sync + 'static {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure>;
}

/// How a stage reads one of its input topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Values are the stage's input records.
    Primary,
    /// Values are [`FailureEnvelope`]s due at `not_before`; tier n (1-based).
    RetryTier(u32),
}

#[derive(Debug, Clone)]
pub struct InputTopic {
    pub topic: String,
    pub kind: InputKind,
}

/// What a running stage shows the process's health checks.
#[derive(Debug, Default)]
pub struct StageProbe {
    /// Partitions assigned to this stage's consumer now.
    pub assigned: std::sync::atomic::AtomicUsize,
    /// Assignments received (rebalances that gave this member partitions,
    /// or none).
    pub assignments: std::sync::atomic::AtomicU64,
    /// Set once `run_stage` has subscribed; cleared when it returns.
    pub running: std::sync::atomic::AtomicBool,
    /// Whether the stage has paused its partitions for backpressure.
    pub paused_for_capacity: std::sync::atomic::AtomicBool,
}

impl StageProbe {
    pub fn assigned(&self) -> usize {
        self.assigned.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn assignments(&self) -> u64 {
        self.assignments.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn is_running(&self) -> bool {
        self.running.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Everything the runtime needs to know about one stage, filled in by
/// `topology`.
#[derive(Debug, Clone)]
pub struct StageWiring {
    pub stage: &'static str,
    pub group: String,
    pub inputs: Vec<InputTopic>,
    pub output: Option<String>,
    /// Retry tiers in order: topic and delay.
    pub retry_tiers: Vec<(String, Duration)>,
    pub dlq: String,
    /// Most records running at once (as many again may wait, taken).
    pub max_in_flight: usize,
    /// Memory budget: most payload bytes held by records taken and not
    /// finished. Reaching either bound pauses consumption.
    pub max_in_flight_bytes: usize,
    /// How long revoke and shutdown wait for in-flight records.
    pub drain_timeout: Duration,
    /// Shared with the process's health checks.
    pub probe: Arc<StageProbe>,
}

impl StageWiring {
    fn kind_of(&self, topic: &str) -> InputKind {
        self.inputs
            .iter()
            .find(|i| i.topic == topic)
            .map(|i| i.kind)
            .unwrap_or(InputKind::Primary)
    }
}

type Shared = Arc<Mutex<Tracker<OwnedMessage>>>;

/// Rebalance handling: on revoke, drain and commit the revoked partitions.
pub struct StageContext {
    stage: &'static str,
    tracker: Shared,
    drain_timeout: Duration,
    probe: Arc<StageProbe>,
}

/// Runs a blocking wait without holding up the tokio worker thread it is
/// called on (rebalance callbacks run inside the consumer's poll, on a
/// worker): other tasks move to another thread meanwhile.
fn off_the_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl ClientContext for StageContext {}

fn tpl_of(offsets: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), off) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*off));
    }
    tpl
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        self.probe.assigned.store(0, std::sync::atomic::Ordering::Relaxed);
        let tps = tps_of(tpl);
        if tps.is_empty() {
            return;
        }
        // Draining: the records already running on these partitions finish
        // (bounded); queued ones are left to the next owner.
        self.tracker.lock().expect("tracker lock").unqueue(&tps);
        let deadline = Instant::now() + self.drain_timeout;
        let offsets = off_the_worker(|| loop {
            let mut t = self.tracker.lock().expect("tracker lock");
            let left = t.running_on(&tps);
            if left == 0 || Instant::now() >= deadline {
                if left > 0 {
                    warn!(
                        stage = self.stage,
                        left, "revoke drain timed out; unfinished records will be redone by the next owner"
                    );
                }
                // Under the same lock: nothing finishes between the two.
                let offsets = t.committable(&tps);
                t.revoke(&tps);
                break offsets;
            }
            drop(t);
            std::thread::sleep(Duration::from_millis(5));
        });
        if !offsets.is_empty() {
            // Asynchronous: the request goes out ahead of the rejoin on the
            // coordinator connection, and a broker that is gone cannot hang
            // this callback (a synchronous commit waits without a bound; a
            // consumer closed after its broker stopped would never return).
            // Offsets committed late only redo records, which is idempotent.
            // Stored too: librdkafka commits the stored offsets when it
            // unassigns, and those may lag behind (finishes not yet seen by
            // the main loop, which is blocked in this callback).
            let tpl = tpl_of(&offsets);
            if let Err(e) = consumer.store_offsets(&tpl) {
                debug!(stage = self.stage, error = %e, "offsets not stored on revoke");
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                warn!(stage = self.stage, error = %e, "commit on revoke failed");
            }
        }
        // librdkafka keeps an application pause across revoke and re-assign:
        // a partition paused for a held retry record (whose copy is dropped
        // now) would never flow again if it came back to us.
        if let Err(e) = consumer.resume(tpl) {
            debug!(stage = self.stage, error = %e, "resume on revoke failed");
        }
        info!(
            stage = self.stage,
            partitions = tps.len(),
            "partitions revoked and committed"
        );
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps = tps_of(tpl);
            info!(stage = self.stage, partitions = tps.len(), "partitions assigned");
            self.probe
                .assigned
                .store(tps.len(), std::sync::atomic::Ordering::Relaxed);
            self.probe
                .assignments
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.tracker.lock().expect("tracker lock").assign(tps);
        }
    }
}

type StageConsumer = StreamConsumer<StageContext>;

/// A record finished on this partition (of this assignment): its
/// committable offset may have moved.
struct Finished {
    tp: TopicPartition,
    generation: u64,
}

/// What the per-key tasks share. It holds no consumer: only `run_stage`
/// owns it, so a task that outlives a timed-out drain can never be the one
/// that closes it (librdkafka asserts when a consumer with a rebalance
/// pending is closed from an arbitrary thread).
struct Worker {
    wiring: Arc<StageWiring>,
    /// `max_in_flight` permits: records running at once.
    running: Arc<tokio::sync::Semaphore>,
    stage: Arc<dyn Stage>,
    producer: Arc<DurableProducer>,
    tracker: Shared,
    done: mpsc::UnboundedSender<Option<Finished>>,
    shutdown: CancellationToken,
}

/// How many times one record may be deferred by rate limits before a
/// further deferral counts as a failed attempt (so a peer that answers 429
/// forever still ends in the DLQ, visibly, instead of looping).
pub const MAX_THROTTLES: u32 = 100;

/// Records taken per record allowed to run: the ones beyond `max_in_flight`
/// wait for a permit. Without them a stage at its bound paused, drained to
/// half, resumed, and then sat idle while librdkafka fetched the resumed
/// partitions again: a stage with 64 in flight and 16 ms per record took
/// 160 records/s off a 5,000-record backlog instead of thousands.
pub const BUFFER_FACTOR: usize = 2;

/// A failure record's destination.
enum Route<'a> {
    Tier {
        n: usize,
        topic: &'a str,
        not_before_ms: i64,
        throttled: bool,
    },
    Dlq,
}

impl Worker {
    /// Runs a key's tickets one after another until its queue is empty (or
    /// the stage stops: then queued tickets are left for the next owner).
    async fn run_key(self: Arc<Self>, key: Vec<u8>, mut ticket: Ticket<OwnedMessage>) {
        loop {
            self.process(&ticket.job).await;
            let (committable, next) =
                self.tracker
                    .lock()
                    .expect("tracker lock")
                    .finish(&key, &ticket.tp, ticket.offset, ticket.generation);
            let _ = self.done.send(committable.map(|_| Finished {
                tp: ticket.tp.clone(),
                generation: ticket.generation,
            }));
            match next {
                Some(n) => ticket = n,
                None => return,
            }
        }
    }

    async fn process(&self, msg: &OwnedMessage) {
        // Never closed: the permit always comes.
        let _running = self.running.acquire().await;
        let stage = self.wiring.stage;
        let started = Instant::now();
        let gauge = metrics().stage_inflight.with_label_values(&[stage]);
        gauge.inc();
        let key = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("")
            .to_string();
        let ticket_id = key.split_once(':').map(|(_, t)| t.to_string()).unwrap_or_default();
        let headers = JobHeaders::from_kafka(msg.headers());
        let (corr, tenant, job) = match &headers {
            Ok(h) => (h.correlation_id.clone(), h.tenant_id.clone(), h.job_id.clone()),
            Err(_) => (String::new(), String::new(), String::new()),
        };
        // The consumer span of this record (one per attempt), a child of
        // the producer span that wrote it (its `traceparent`).
        let span = tracing::info_span!(
            "job",
            stage,
            correlation_id = %corr,
            tenant_id = %tenant,
            ticket_id = %ticket_id,
            job_id = %job,
            otel.name = %format_args!("process {}", msg.topic()),
            otel.kind = "consumer",
        );
        trace::set_remote_parent(&span, crate::headers::get_owned(msg.headers(), "traceparent"));
        trace::messaging(&span, "process", msg.topic(), &key);
        trace::kafka_position(&span, msg.partition(), msg.offset());
        trace::attr(&span, "messaging.consumer.group.name", self.wiring.group.clone());
        async {
            let outcome = self.run_stage(msg, &key, headers).await;
            let label = match &outcome {
                Ok(_) => "ok",
                Err((_, f)) if matches!(f.hint, RetryHint::Throttled { .. }) => "throttled",
                Err((_, f)) if f.hint.is_retryable() => "retryable_error",
                Err(_) => "permanent_error",
            };
            if let Err((_, f)) = &outcome {
                trace::set_error(&tracing::Span::current(), label, f.error.as_str());
            }
            metrics().stage_records.with_label_values(&[stage, label]).inc();
            metrics()
                .stage_duration
                .with_label_values(&[stage])
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Ok(()) => debug!(elapsed_ms = started.elapsed().as_millis() as u64, "record done"),
                Err((ctx, failure)) => self.route_failure(msg, &key, ctx, failure).await,
            }
        }
        .instrument(span)
        .await;
        gauge.dec();
    }

    /// Runs the stage on a record; on failure returns what routing needs.
    async fn run_stage(
        &self,
        msg: &OwnedMessage,
        key: &str,
        headers: Result<JobHeaders, crate::headers::MissingHeader>,
    ) -> Result<(), (FailureContext, StageFailure)> {
        let topic = msg.topic();
        let kind = self.wiring.kind_of(topic);
        let bytes = msg.payload().unwrap_or_default();
        let mut ctx = FailureContext {
            headers: headers.as_ref().ok().cloned(),
            payload: bytes.to_vec(),
            original_topic: topic.to_string(),
            original_partition: msg.partition(),
            original_offset: msg.offset(),
            attempts_before: 0,
            throttles: crate::headers::get_owned(msg.headers(), "throttles")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        };
        let headers = headers.map_err(|e| (ctx.clone(), StageFailure::permanent(format!("poison record: {e}"))))?;
        let mut attempt = 1;
        let mut value = bytes;
        let envelope;
        if let InputKind::RetryTier(_) = kind {
            envelope = Codec::builtin().decode::<FailureEnvelope>(bytes).map_err(|e| {
                (
                    ctx.clone(),
                    StageFailure::permanent(format!("poison retry record: {e}")),
                )
            })?;
            attempt = envelope.attempt + 1;
            ctx.payload = envelope.payload.clone();
            ctx.original_topic = envelope.original_topic.clone();
            ctx.original_partition = envelope.original_partition;
            ctx.original_offset = envelope.original_offset;
            ctx.attempts_before = envelope.attempt;
            value = &envelope.payload;
        }
        trace::attr(&tracing::Span::current(), "ticketflow.attempt", i64::from(attempt));
        let input = StageInput {
            value,
            key,
            headers: &headers,
            attempt,
            topic,
        };
        match self.stage.handle(input).await {
            Ok(StageOutput::Forward(out)) => {
                let topic = self
                    .wiring
                    .output
                    .as_deref()
                    .expect("a stage that forwards has an output topic");
                match self.produce(topic, key, &out, headers.next_hop(1).to_kafka()).await {
                    Ok(()) => Ok(()),
                    Err(e) => Err((
                        ctx,
                        StageFailure::permanent(format!(
                            "the broker refused this stage's output record ({} bytes) for {topic}: {e}",
                            out.len()
                        )),
                    )),
                }
            }
            Ok(StageOutput::Done) => Ok(()),
            Err(f) => Err((ctx, f)),
        }
    }

    async fn route_failure(&self, msg: &OwnedMessage, key: &str, ctx: FailureContext, failure: StageFailure) {
        let stage = self.wiring.stage;
        let tiers = &self.wiring.retry_tiers;
        let hint = match failure.hint {
            RetryHint::Throttled { after } if ctx.throttles >= MAX_THROTTLES || tiers.is_empty() => {
                RetryHint::Retryable { after: Some(after) }
            }
            h => h,
        };
        let route = match hint {
            RetryHint::Throttled { after } => {
                // Back to the tier it came from (tier 1 from the input
                // topic), due when the limit allows; no attempt used.
                let n = (ctx.attempts_before.max(1) as usize).min(tiers.len());
                Route::Tier {
                    n,
                    topic: &tiers[n - 1].0,
                    not_before_ms: now_ms() + after.as_millis() as i64,
                    throttled: true,
                }
            }
            RetryHint::Retryable { after } if (ctx.attempts_before as usize) < tiers.len() => {
                let n = ctx.attempts_before as usize + 1;
                let (topic, delay) = &tiers[n - 1];
                let delay = after.map_or(*delay, |a| a.max(*delay));
                Route::Tier {
                    n,
                    topic,
                    not_before_ms: now_ms() + delay.as_millis() as i64,
                    throttled: false,
                }
            }
            _ => Route::Dlq,
        };
        let throttled = matches!(route, Route::Tier { throttled: true, .. });
        let attempt = if throttled {
            ctx.attempts_before
        } else {
            ctx.attempts_before + 1
        };
        let headers = ctx.headers.clone().unwrap_or_else(|| JobHeaders {
            correlation_id: crate::headers::get_owned(msg.headers(), "correlation_id")
                .unwrap_or("unknown")
                .to_string(),
            tenant_id: crate::headers::get_owned(msg.headers(), "tenant_id")
                .unwrap_or("unknown")
                .to_string(),
            job_id: crate::headers::get_owned(msg.headers(), "job_id")
                .unwrap_or("unknown")
                .to_string(),
            traceparent: crate::headers::new_traceparent(),
            attempt,
            replayed_from: crate::headers::get_owned(msg.headers(), "replayed_from").map(str::to_string),
        });
        let (topic, not_before_ms) = match &route {
            Route::Tier {
                topic, not_before_ms, ..
            } => (*topic, *not_before_ms),
            Route::Dlq => (self.wiring.dlq.as_str(), 0),
        };
        let envelope = FailureEnvelope {
            job_id: headers.job_id.clone(),
            correlation_id: headers.correlation_id.clone(),
            tenant_id: headers.tenant_id.clone(),
            ticket_id: key.split_once(':').map(|(_, t)| t).unwrap_or(key).to_string(),
            failed_stage: stage.to_string(),
            error: failure.error.clone(),
            error_class: hint.label().to_string(),
            attempt,
            original_topic: ctx.original_topic.clone(),
            original_partition: ctx.original_partition,
            original_offset: ctx.original_offset,
            failed_at_ms: now_ms(),
            not_before_ms,
            payload: ctx.payload,
        };
        let mut envelope = envelope;
        let value = Codec::builtin()
            .encode(&envelope)
            .expect("failure envelopes always encode");
        let kafka_headers = FailureHeaders {
            error: &failure.error,
            error_class: hint.label(),
            failed_stage: stage,
            original_topic: &ctx.original_topic,
            original_partition: ctx.original_partition,
            original_offset: ctx.original_offset,
            not_before_ms: matches!(route, Route::Tier { .. }).then_some(not_before_ms),
        }
        .append_to(headers.next_hop(attempt).to_kafka());
        let throttles = ctx.throttles + u32::from(throttled);
        let kafka_headers = if throttles > 0 {
            kafka_headers.insert(rdkafka::message::Header {
                key: "throttles",
                value: Some(throttles.to_string().as_str()),
            })
        } else {
            kafka_headers
        };
        match route {
            Route::Tier { throttled: true, n, .. } => {
                info!(reason = %failure.error, throttles, tier = n, not_before_ms, "rate limited; record deferred without using an attempt");
                metrics().retries.with_label_values(&[stage, "throttled"]).inc();
            }
            Route::Tier { n, .. } => {
                warn!(error = %failure.error, attempt, tier = n, "stage failed; record sent to retry tier");
                metrics().retries.with_label_values(&[stage, &n.to_string()]).inc();
            }
            Route::Dlq => {
                error!(error = %failure.error, error_class = hint.label(), attempt, "stage failed; record sent to dead-letter topic");
                metrics().dlq_records.with_label_values(&[stage]).inc();
            }
        }
        if let Err(e) = self.produce(topic, key, &value, kafka_headers.clone()).await {
            // The envelope itself is refused (its payload is too large):
            // dead-letter it without the payload, saying so, rather than
            // lose the job or retry forever.
            error!(topic, error = %e, payload_bytes = envelope.payload.len(), "failure record refused by the broker; dead-lettering it without its payload");
            let dlq = self.wiring.dlq.as_str();
            envelope.error = format!(
                "{} (payload of {} bytes dropped: the broker refused the record: {e})",
                envelope.error,
                envelope.payload.len()
            );
            envelope.payload = Vec::new();
            envelope.not_before_ms = 0;
            let value = Codec::builtin()
                .encode(&envelope)
                .expect("failure envelopes always encode");
            if let Err(e) = self.produce(dlq, key, &value, kafka_headers).await {
                error!(topic = dlq, error = %e, "dead-letter record refused by the broker; the job ends here");
            }
        }
    }

    /// Produces until the broker acknowledges; returns an error only when
    /// the broker refuses the record for good. On shutdown it keeps trying
    /// through the drain window (the runtime stops waiting at its bound; the
    /// record is then redone after restart).
    async fn produce(&self, topic: &str, key: &str, value: &[u8], headers: OwnedHeaders) -> Result<(), ProduceError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .producer
                .send(topic, key, value, headers.clone(), Duration::from_secs(30))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e @ ProduceError::Permanent(_)) => {
                    error!(topic, error = %e, bytes = value.len(), "the broker refused the record for good");
                    return Err(e);
                }
                Err(e) => {
                    warn!(topic, error = %e, "produce failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => {
                            // Keep trying through the drain window; the runtime stops waiting at its bound.
                            tokio::time::sleep(backoff).await;
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[derive(Clone)]
struct FailureContext {
    headers: Option<JobHeaders>,
    payload: Vec<u8>,
    original_topic: String,
    original_partition: i32,
    original_offset: i64,
    attempts_before: i32,
    /// Times this record was deferred by a rate limit (header `throttles`).
    throttles: u32,
}

/// A retry record held until it is due, its partition paused (or, set
/// aside, reserved in the tracker).
struct Held {
    due: Instant,
    msg: OwnedMessage,
    /// The partition's assignment it was read under: after a revoke (even
    /// if the partition comes back) the record is redelivered, so this copy
    /// is dropped.
    generation: Option<u64>,
}

impl Held {
    fn tp(&self) -> TopicPartition {
        (self.msg.topic().to_string(), self.msg.partition())
    }
}

/// Leeway between a tier's delay and a record's `not_before` before the
/// record counts as deferred beyond its tier (clock steps, produce time).
const SET_ASIDE_SLACK_MS: i64 = 500;

/// Whether a retry record is due later than its tier's delay after it was
/// written: only a `Retry-After` longer than the tier does that.
fn due_beyond_its_tier(msg: &OwnedMessage, not_before_ms: i64, tier_delay: Duration) -> bool {
    let Some(written_ms) = msg.timestamp().to_millis() else {
        return false;
    };
    not_before_ms > written_ms + tier_delay.as_millis() as i64 + SET_ASIDE_SLACK_MS
}

fn not_before_of(msg: &OwnedMessage) -> Option<i64> {
    crate::headers::get_owned(msg.headers(), "not_before").and_then(|v| v.parse().ok())
}

/// Runs one stage until `shutdown` is cancelled, then drains and commits.
pub async fn run_stage(
    wiring: StageWiring,
    mut consumer_config: ClientConfig,
    producer: Arc<DurableProducer>,
    stage: Arc<dyn Stage>,
    shutdown: CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let wiring = Arc::new(wiring);
    let tracker: Shared = Arc::new(Mutex::new(Tracker::default()));
    let context = StageContext {
        stage: wiring.stage,
        tracker: tracker.clone(),
        drain_timeout: wiring.drain_timeout,
        probe: wiring.probe.clone(),
    };
    consumer_config
        .set("group.id", &wiring.group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "16384");
    let consumer: Arc<StageConsumer> = Arc::new(consumer_config.create_with_context(context)?);
    let topics: Vec<&str> = wiring.inputs.iter().map(|i| i.topic.as_str()).collect();
    consumer.subscribe(&topics)?;
    let probe = wiring.probe.clone();
    probe.running.store(true, std::sync::atomic::Ordering::Relaxed);
    info!(stage = wiring.stage, group = %wiring.group, topics = ?topics, "stage consuming");

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let worker = Arc::new(Worker {
        running: Arc::new(tokio::sync::Semaphore::new(wiring.max_in_flight.max(1))),
        wiring: wiring.clone(),
        stage,
        producer,
        tracker: tracker.clone(),
        done: done_tx,
        shutdown: shutdown.clone(),
    });
    let mut held: HashMap<TopicPartition, Held> = HashMap::new();
    // Retry records due beyond their tier's delay, reserved in the tracker.
    let mut set_aside: Vec<Held> = Vec::new();
    let max_set_aside = (wiring.max_in_flight / 4).max(1);
    let mut at_capacity = false;
    // Partitions this loop paused for backpressure (not those paused for a
    // held retry record).
    let mut capacity_paused: Vec<TopicPartition> = Vec::new();
    let max_taken = wiring.max_in_flight.max(1) * BUFFER_FACTOR;
    let low_water = max_taken / 2;
    // Every turn of the loop polls the consumer; the tick makes sure it
    // turns at least once a second, paused or idle, so the member never
    // exceeds max.poll.interval.ms.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let pause = |tps: &[TopicPartition], consumer: &StageConsumer| {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in tps {
            tpl.add_partition(t, *p);
        }
        if let Err(e) = consumer.pause(&tpl) {
            debug!(error = %e, "pause failed");
        }
    };
    let resume = |tps: &[TopicPartition], consumer: &StageConsumer| {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in tps {
            tpl.add_partition(t, *p);
        }
        if let Err(e) = consumer.resume(&tpl) {
            debug!(error = %e, "resume failed");
        }
    };

    // Offsets are stored only here, by the consumer's owner; a finish from
    // an earlier assignment of the partition is ignored.
    let store = |c: Finished, consumer: &StageConsumer| {
        // Read again now: finishes may reach this loop out of order, and the
        // stored offset must never move back.
        let offsets = {
            let t = tracker.lock().expect("tracker lock");
            if t.generation_of(&c.tp) != Some(c.generation) {
                return;
            }
            t.committable(std::slice::from_ref(&c.tp))
        };
        if let Err(e) = consumer.store_offsets(&tpl_of(&offsets)) {
            debug!(stage = wiring.stage, error = %e, "offset not stored (partition revoked)");
        }
    };

    let dispatch = |msg: OwnedMessage| {
        let tp = (msg.topic().to_string(), msg.partition());
        let key = msg.key().map(<[u8]>::to_vec).unwrap_or_default();
        let offset = msg.offset();
        let bytes = msg.payload().map_or(0, <[u8]>::len) + key.len() + 256;
        let taken = tracker.lock().expect("tracker lock").take(tp, offset, &key, msg, bytes);
        if let Taken::Start(ticket) = taken {
            tokio::spawn(worker.clone().run_key(key, ticket));
        }
    };

    loop {
        // Release held retry records that are due.
        let now = Instant::now();
        let due: Vec<TopicPartition> = held
            .iter()
            .filter(|(_, h)| h.due <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        let current = |h: &Held| tracker.lock().expect("tracker lock").generation_of(&h.tp()) == h.generation;
        for tp in due {
            let h = held.remove(&tp).expect("due record is held");
            if current(&h) {
                dispatch(h.msg);
                // Stays paused while the stage is at capacity: the resume
                // at low water lets it flow again.
                if at_capacity {
                    if !capacity_paused.contains(&tp) {
                        capacity_paused.push(tp);
                    }
                } else {
                    resume(std::slice::from_ref(&tp), &consumer);
                }
            }
        }
        held.retain(|_, h| current(h));
        let (ready, waiting): (Vec<Held>, Vec<Held>) = std::mem::take(&mut set_aside)
            .into_iter()
            .filter(|h| current(h))
            .partition(|h| h.due <= now);
        set_aside = waiting;
        for h in ready {
            // Its offset is reserved: taking it now counts it once.
            dispatch(h.msg);
        }

        // Backpressure.
        let (in_flight, in_flight_bytes) = {
            let t = tracker.lock().expect("tracker lock");
            (t.in_flight(), t.in_flight_bytes())
        };
        if !at_capacity && (in_flight >= max_taken || in_flight_bytes >= wiring.max_in_flight_bytes) {
            at_capacity = true;
            probe
                .paused_for_capacity
                .store(true, std::sync::atomic::Ordering::Relaxed);
            debug!(
                stage = wiring.stage,
                in_flight, in_flight_bytes, "in-flight bound reached; partitions paused"
            );
        } else if at_capacity && in_flight <= low_water && in_flight_bytes <= wiring.max_in_flight_bytes / 2 {
            at_capacity = false;
            probe
                .paused_for_capacity
                .store(false, std::sync::atomic::Ordering::Relaxed);
            // Resume what this loop paused and still owns, except partitions
            // now held for a retry record.
            let assigned = tracker.lock().expect("tracker lock").assigned();
            let back: Vec<TopicPartition> = std::mem::take(&mut capacity_paused)
                .into_iter()
                .filter(|tp| assigned.contains(tp) && !held.contains_key(tp))
                .collect();
            resume(&back, &consumer);
        }
        if at_capacity {
            // Pause what is assigned and not paused yet (partitions may have
            // been assigned since the bound was reached).
            let assigned = tracker.lock().expect("tracker lock").assigned();
            capacity_paused.retain(|tp| assigned.contains(tp));
            let new: Vec<TopicPartition> = assigned
                .into_iter()
                .filter(|tp| !capacity_paused.contains(tp))
                .collect();
            if !new.is_empty() {
                pause(&new, &consumer);
                capacity_paused.extend(new);
            }
        }

        let next_due = held.values().chain(set_aside.iter()).map(|h| h.due).min();
        let sleep_until = next_due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            done = done_rx.recv() => {
                if let Some(Some(c)) = done {
                    store(c, &consumer);
                }
            }
            _ = tokio::time::sleep_until(sleep_until.into()), if next_due.is_some() => {}
            _ = tick.tick() => {}
            msg = consumer.recv() => {
                let msg = match msg {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        warn!(stage = wiring.stage, error = %e, "consumer error");
                        continue;
                    }
                };
                let tp = (msg.topic().to_string(), msg.partition());
                if let InputKind::RetryTier(n) = wiring.kind_of(msg.topic()) {
                    if let Some(nb) = not_before_of(&msg) {
                        let wait = nb - now_ms();
                        if wait > 0 {
                            let due = Instant::now() + Duration::from_millis(wait as u64);
                            let generation = tracker.lock().expect("tracker lock").generation_of(&tp);
                            let tier_delay = wiring.retry_tiers.get(n as usize - 1).map_or(Duration::ZERO, |t| t.1);
                            if set_aside.len() < max_set_aside && due_beyond_its_tier(&msg, nb, tier_delay) {
                                let bytes = msg.payload().map_or(0, <[u8]>::len) + 256;
                                if tracker.lock().expect("tracker lock").reserve(&tp, msg.offset(), bytes) {
                                    debug!(stage = wiring.stage, wait, "retry record due beyond its tier; set aside");
                                    set_aside.push(Held { due, msg, generation });
                                }
                                continue;
                            }
                            // Hold it and pause its partition until due.
                            pause(std::slice::from_ref(&tp), &consumer);
                            held.insert(tp, Held { due, msg, generation });
                            continue;
                        }
                    }
                }
                dispatch(msg);
            }
        }
    }

    // Shutdown: stop taking records, finish the running ones (queued ones
    // do not start), commit.
    info!(stage = wiring.stage, "stage draining");
    let assigned = {
        let mut t = tracker.lock().expect("tracker lock");
        t.stop();
        t.assigned()
    };
    pause(&assigned, &consumer);
    let deadline = Instant::now() + wiring.drain_timeout;
    loop {
        let left = tracker.lock().expect("tracker lock").running();
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            warn!(
                stage = wiring.stage,
                left, "drain timed out; unfinished records will be redone after restart"
            );
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), done_rx.recv()).await;
    }
    let offsets = tracker.lock().expect("tracker lock").committable(&assigned);
    if !offsets.is_empty() {
        // Asynchronous (see the revoke callback): closing the consumer below
        // waits for the outstanding commit, bounded by librdkafka's request
        // timeouts rather than forever when the broker is gone. Stored as
        // well, because the close commits the stored offsets after it.
        let tpl = tpl_of(&offsets);
        if let Err(e) = consumer.store_offsets(&tpl) {
            debug!(stage = wiring.stage, error = %e, "final offsets not stored");
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(stage = wiring.stage, error = %e, "final commit failed");
        }
    }
    drop(worker);
    drop(done_rx);
    // Closing the consumer leaves the group; it blocks, so off the runtime's
    // workers. This is the consumer's last owner (the rebalance callback
    // holds no reference to it).
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    probe.running.store(false, std::sync::atomic::Ordering::Relaxed);
    probe.assigned.store(0, std::sync::atomic::Ordering::Relaxed);
    info!(stage = wiring.stage, "stage stopped");
    Ok(())
}
