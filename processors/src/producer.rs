//! The one producer of a process (ingest and every stage share it), made so
//! it never wedges silently.
//!
//! - **Fatal errors** (librdkafka's `rd_kafka_fatal_error`: the idempotent
//!   producer's sequence or epoch can no longer be kept) make the producer
//!   useless for good: it is recreated at once.
//! - **A livelock** that librdkafka does not call fatal: a broker that lost
//!   its data answers `UNKNOWN_PRODUCER_ID` forever, and every delivery
//!   times out while the broker itself answers. After
//!   [`STUCK_AFTER_FAILURES`] failed deliveries in a row spanning
//!   [`STUCK_AFTER`], while the broker answers metadata, the producer is
//!   recreated (a fresh producer id; delivery is at-least-once and the
//!   stages are idempotent by job id, so a record written twice is harmless).
//! - **Permanent errors** (record too large, topic unknown or not
//!   authorised, record refused) are told apart from transient ones, so a
//!   caller routes the record elsewhere instead of retrying it forever.
//!
//! While a recreation fails, [`DurableProducer::health`] reports why, and
//! readiness answers 503.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tracing::{error, info, warn, Instrument};

/// Failed deliveries in a row (with the broker answering) before the
/// producer counts as stuck.
pub const STUCK_AFTER_FAILURES: u32 = 3;
/// ... and the least time those failures must span.
pub const STUCK_AFTER: Duration = Duration::from_secs(15);

/// Why a record was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceError {
    /// Retrying the same record cannot succeed (too large, unknown or
    /// forbidden topic, refused by the broker).
    Permanent(String),
    /// The broker did not acknowledge in time or is unreachable; retry.
    Transient(String),
}

impl ProduceError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, ProduceError::Permanent(_))
    }
    pub fn message(&self) -> &str {
        match self {
            ProduceError::Permanent(m) | ProduceError::Transient(m) => m,
        }
    }
}

impl std::fmt::Display for ProduceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Error codes for which sending the same record again is pointless.
pub fn is_permanent_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::InvalidTopic
            | C::UnknownTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::PolicyViolation
            | C::InvalidRequiredAcks
            | C::UnsupportedForMessageFormat
    )
}

pub struct DurableProducer {
    config: ClientConfig,
    inner: RwLock<Arc<FutureProducer>>,
    /// Times the producer was recreated.
    generation: AtomicU64,
    failures_in_a_row: AtomicU32,
    first_failure: Mutex<Option<Instant>>,
    /// Set while the producer is unusable and could not be recreated.
    broken: Mutex<Option<String>>,
    recreating: tokio::sync::Mutex<()>,
}

impl DurableProducer {
    /// `config` is the producer's full librdkafka configuration; it is kept
    /// to make a new producer when this one breaks.
    pub fn new(config: ClientConfig) -> Result<Arc<Self>, KafkaError> {
        let producer: FutureProducer = config.create()?;
        Ok(Arc::new(DurableProducer {
            config,
            inner: RwLock::new(Arc::new(producer)),
            generation: AtomicU64::new(0),
            failures_in_a_row: AtomicU32::new(0),
            first_failure: Mutex::new(None),
            broken: Mutex::new(None),
            recreating: tokio::sync::Mutex::new(()),
        }))
    }

    /// The producer in use now.
    pub fn current(&self) -> Arc<FutureProducer> {
        self.inner.read().expect("producer lock").clone()
    }

    /// How many times the producer was recreated.
    pub fn recreations(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// `Err(reason)` while the producer is fatally broken and not yet
    /// replaced.
    pub fn health(&self) -> Result<(), String> {
        if let Some(reason) = self.broken.lock().expect("producer lock").clone() {
            return Err(reason);
        }
        if let Some((code, reason)) = self.current().client().fatal_error() {
            return Err(format!("producer fatal error {code:?}: {reason}"));
        }
        Ok(())
    }

    /// Writes one record and waits for the broker's acknowledgement (or
    /// `timeout`, which bounds the wait in librdkafka's queue).
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
        timeout: Duration,
    ) -> Result<(i32, i64), ProduceError> {
        // One producer span per send (so per attempt); the record carries
        // its context as `traceparent` (see `crate::trace`).
        let span = crate::trace::send_span(topic, key);
        let headers = match crate::trace::traceparent_of(&span) {
            Some(tp) => {
                crate::trace::job_attributes(&span, &headers);
                crate::trace::with_traceparent(headers, &tp)
            }
            None => headers,
        };
        let result = async {
            let producer = self.current();
            let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
            match producer.send(record, rdkafka::util::Timeout::After(timeout)).await {
                Ok(delivery) => {
                    self.failures_in_a_row.store(0, Ordering::Relaxed);
                    *self.first_failure.lock().expect("producer lock") = None;
                    Ok((delivery.partition, delivery.offset))
                }
                Err((e, _)) => Err(self.failed(&producer, e).await),
            }
        }
        .instrument(span.clone())
        .await;
        match &result {
            Ok((partition, offset)) => crate::trace::kafka_position(&span, *partition, *offset),
            Err(e) => crate::trace::set_error(
                &span,
                if e.is_permanent() { "permanent" } else { "transient" },
                e.message(),
            ),
        }
        result
    }

    async fn failed(&self, producer: &Arc<FutureProducer>, e: KafkaError) -> ProduceError {
        let code = e.rdkafka_error_code();
        if let Some((fatal, reason)) = producer.client().fatal_error() {
            let why = format!("producer fatal error {fatal:?}: {reason}");
            error!(error = %why, "producer is fatally broken; recreating it");
            self.recreate(producer, &why).await;
            return ProduceError::Transient(why);
        }
        if code.is_some_and(is_permanent_code) {
            return ProduceError::Permanent(e.to_string());
        }
        let n = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        let since = *self
            .first_failure
            .lock()
            .expect("producer lock")
            .get_or_insert_with(Instant::now);
        if n >= STUCK_AFTER_FAILURES && since.elapsed() >= STUCK_AFTER && self.broker_answers(producer).await {
            let why = format!(
                "{n} deliveries failed in a row over {} s while the broker answers (last: {e})",
                since.elapsed().as_secs()
            );
            warn!(error = %why, "producer looks stuck; recreating it");
            self.recreate(producer, &why).await;
        }
        ProduceError::Transient(e.to_string())
    }

    async fn broker_answers(&self, producer: &Arc<FutureProducer>) -> bool {
        let p = producer.clone();
        tokio::task::spawn_blocking(move || {
            p.client()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| !m.brokers().is_empty())
        })
        .await
        .unwrap_or(false)
    }

    /// Replaces `broken_one` (unless another caller already did).
    async fn recreate(&self, broken_one: &Arc<FutureProducer>, why: &str) {
        let _one_at_a_time = self.recreating.lock().await;
        if !Arc::ptr_eq(&self.current(), broken_one) {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *self.inner.write().expect("producer lock"), Arc::new(fresh));
                self.generation.fetch_add(1, Ordering::Relaxed);
                self.failures_in_a_row.store(0, Ordering::Relaxed);
                *self.first_failure.lock().expect("producer lock") = None;
                *self.broken.lock().expect("producer lock") = None;
                info!(recreations = self.recreations(), reason = why, "producer recreated");
                // Its queued records fail now (their senders retry on the
                // new producer); destroying it blocks, so off the runtime.
                tokio::task::spawn_blocking(move || {
                    old.purge(PurgeConfig::default().queue().inflight());
                    drop(old);
                });
            }
            Err(e) => {
                error!(error = %e, "producer could not be recreated");
                *self.broken.lock().expect("producer lock") =
                    Some(format!("{why}; recreating the producer failed: {e}"));
            }
        }
    }

    /// Recreates the producer if librdkafka calls it fatally broken (or a
    /// recreation failed before).
    pub async fn recover(&self) {
        let current = self.current();
        let reason = match current.client().fatal_error() {
            Some((code, reason)) => format!("producer fatal error {code:?}: {reason}"),
            None => match self.broken.lock().expect("producer lock").clone() {
                Some(r) => r,
                None => return,
            },
        };
        self.recreate(&current, &reason).await;
    }

    /// Waits for queued records to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.current().flush(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_authorisation_errors_are_permanent_timeouts_are_not() {
        assert!(is_permanent_code(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(is_permanent_code(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(is_permanent_code(RDKafkaErrorCode::UnknownTopic));
        assert!(!is_permanent_code(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_permanent_code(RDKafkaErrorCode::AllBrokersDown));
        assert!(!is_permanent_code(RDKafkaErrorCode::NotLeaderForPartition));
    }
}
