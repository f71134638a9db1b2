//! The pieces every streaming operation shares: a bounded, strict reader of
//! one partition, the offset of a point in time, pacing, and sending a
//! window of records with their acknowledgements.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::KafkaFactory;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read waits for a record before it checks whether retention
/// deleted the rest.
const GAP_CHECK: Duration = Duration::from_secs(5);

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    pub headers: Option<OwnedHeaders>,
    pub value: Vec<u8>,
}

impl ReadRecord {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        ReadRecord {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers: m.headers().map(|h| h.detach()),
            value: m.payload().unwrap_or_default().to_vec(),
        }
    }

    /// One header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .as_ref()?
            .iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads `[from, end)` of one partition in windows. It never takes a quiet
/// moment for the end: it returns fewer records than asked only at `end`,
/// and fails when nothing arrives for `stall` before it.
pub struct PartitionReader {
    consumer: BaseConsumer,
    pub topic: String,
    pub partition: i32,
    /// The next offset to return.
    pub next: i64,
    pub end: i64,
    /// Offsets that were never returned because the broker no longer had
    /// them (retention deleted them while the read went on).
    pub missing: i64,
    stall: Duration,
}

impl PartitionReader {
    /// `group`: the consumer group offsets are committed for (none: read only).
    pub fn open(
        factory: &KafkaFactory,
        group: Option<&str>,
        topic: &str,
        partition: i32,
        from: i64,
        end: i64,
        stall: Duration,
    ) -> Result<Self, String> {
        let consumer = factory.reader(group).map_err(|e| format!("creating a reader: {e}"))?;
        Self::with_consumer(consumer, topic, partition, from, end, stall)
    }

    pub fn with_consumer(
        consumer: BaseConsumer,
        topic: &str,
        partition: i32,
        from: i64,
        end: i64,
        stall: Duration,
    ) -> Result<Self, String> {
        let r = PartitionReader {
            consumer,
            topic: topic.to_string(),
            partition,
            next: from,
            end,
            missing: 0,
            stall,
        };
        if from < end {
            r.seek_to_next()?;
        }
        Ok(r)
    }

    fn seek_to_next(&self) -> Result<(), String> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(self.next))
            .map_err(|e| e.to_string())?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| format!("reading {}/{}: {e}", self.topic, self.partition))
    }

    pub fn consumer(&self) -> &BaseConsumer {
        &self.consumer
    }

    pub fn at_end(&self) -> bool {
        self.next >= self.end
    }

    /// [`next_window`](Self::next_window), and where `--to` cuts it: the
    /// index of its first record stamped at or after `to_ms` (reading
    /// stops there; that record and the ones after it are not handled).
    pub fn next_window_until(
        &mut self,
        max: usize,
        to_ms: Option<i64>,
    ) -> Result<(Vec<ReadRecord>, Option<usize>), String> {
        let window = self.next_window(max)?;
        let cut = to_ms.and_then(|to| window.iter().position(|r| r.timestamp_ms.is_some_and(|ts| ts >= to)));
        Ok((window, cut))
    }

    /// Up to `max` records from `next` on; fewer only when `end` is reached.
    pub fn next_window(&mut self, max: usize) -> Result<Vec<ReadRecord>, String> {
        let mut out = Vec::new();
        let mut last_progress = Instant::now();
        let mut last_check = Instant::now();
        let mut last_error: Option<String> = None;
        while out.len() < max && self.next < self.end {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if m.partition() != self.partition || m.offset() < self.next {
                        continue;
                    }
                    last_progress = Instant::now();
                    if m.offset() >= self.end {
                        // The offsets up to the end are gone (deleted by retention).
                        self.missing += self.end - self.next;
                        self.next = self.end;
                        break;
                    }
                    self.missing += m.offset() - self.next;
                    self.next = m.offset() + 1;
                    out.push(ReadRecord::of(&m));
                }
                // The end of what the broker holds now; `end` may still be ahead while it catches up.
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => last_error = Some(e.to_string()),
                None => {}
            }
            if last_progress.elapsed() >= GAP_CHECK && last_check.elapsed() >= GAP_CHECK {
                // Retention may have deleted what is left to read: then the
                // partition starts past `next`, and nothing will ever come.
                last_check = Instant::now();
                if let Ok((low, _)) = self.consumer.fetch_watermarks(&self.topic, self.partition, TIMEOUT) {
                    if low > self.next {
                        let to = low.min(self.end);
                        self.missing += to - self.next;
                        self.next = to;
                        last_progress = Instant::now();
                        if self.next < self.end {
                            self.seek_to_next()?;
                        }
                        continue;
                    }
                }
            }
            if last_progress.elapsed() >= self.stall {
                return Err(format!(
                    "nothing could be read from {}/{} at offset {} for {} s although the partition held records up to offset {} when this began{}; stopping there",
                    self.topic,
                    self.partition,
                    self.next,
                    self.stall.as_secs(),
                    self.end - 1,
                    last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default()
                ));
            }
        }
        Ok(out)
    }
}

/// The first record at or after `offset` in `[offset, end)`, read with a
/// consumer that fetches no more than it must; `None` when there is none
/// before `end`.
pub fn read_at(
    factory: &KafkaFactory,
    topic: &str,
    partition: i32,
    offset: i64,
    end: i64,
) -> Result<Option<ReadRecord>, String> {
    let peeker = factory.peeker(None).map_err(|e| format!("creating a reader: {e}"))?;
    let mut r = PartitionReader::with_consumer(peeker, topic, partition, offset, end, super::STALL_TIMEOUT)?;
    Ok(r.next_window(1)?.pop())
}

/// Low and high watermarks of every partition of `topic`, in partition order.
pub fn watermarks(c: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>, String> {
    let mut out = Vec::new();
    let mut ps = crate::ops::partitions_of(c, topic)?;
    ps.sort_unstable();
    for p in ps {
        let (low, high) = c
            .fetch_watermarks(topic, p, TIMEOUT)
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        out.push((p, low, high));
    }
    Ok(out)
}

/// Committed offsets of `c`'s group on `topic` (absent: none committed).
pub fn committed(c: &BaseConsumer, topic: &str, partitions: &[i32]) -> Result<Vec<Option<i64>>, String> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let got = c
        .committed_offsets(tpl, TIMEOUT)
        .map_err(|e| format!("committed offsets on {topic}: {e}"))?;
    Ok(partitions
        .iter()
        .map(|p| match got.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect())
}

/// Commits `offset` (the next record to read) for `c`'s group.
pub fn commit(c: &BaseConsumer, topic: &str, partition: i32, offset: i64) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| e.to_string())?;
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .map_err(|e| format!("committing {topic}/{partition} at offset {offset}: {e}"))
}

/// How the offset of a point in time was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// The broker's offset-for-time answer, checked against the records around it.
    Broker,
    /// A binary search over record timestamps (the broker's answer was wrong or missing).
    Search,
    /// The partition holds nothing in `[low, high)`.
    Empty,
}

impl FoundBy {
    pub fn as_str(self) -> &'static str {
        match self {
            FoundBy::Broker => "broker",
            FoundBy::Search => "search",
            FoundBy::Empty => "empty",
        }
    }
}

/// The first offset in `[low, high]` whose record's timestamp is at or after
/// `at_ms` (`high` when none is). The broker is asked first and its answer
/// checked against the records on both sides of it (tansu answered 0 for
/// every time); when the check fails, the record timestamps are
/// binary-searched (they grow with the offset for records ingest writes).
pub fn offset_at_time(
    factory: &KafkaFactory,
    c: &BaseConsumer,
    topic: &str,
    partition: i32,
    low: i64,
    high: i64,
    at_ms: i64,
) -> Result<(i64, FoundBy), String> {
    if low >= high {
        return Ok((high, FoundBy::Empty));
    }
    let ts_at = |o: i64| -> Result<Option<i64>, String> {
        Ok(read_at(factory, topic, partition, o, high)?.map(|r| r.timestamp_ms.unwrap_or(i64::MAX)))
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(at_ms))
        .map_err(|e| e.to_string())?;
    let answer = c
        .offsets_for_times(tpl, TIMEOUT)
        .ok()
        .and_then(|t| t.find_partition(topic, partition).map(|e| e.offset()))
        .and_then(|o| match o {
            Offset::Offset(o) => Some(o),
            Offset::End => Some(high),
            _ => None,
        });
    if let Some(o) = answer.filter(|o| (low..=high).contains(o)) {
        let before_ok = o == low || ts_at(o - 1)?.is_some_and(|ts| ts < at_ms);
        let at_ok = o == high || ts_at(o)?.is_some_and(|ts| ts >= at_ms);
        if before_ok && at_ok {
            return Ok((o, FoundBy::Broker));
        }
    }
    let (mut lo, mut hi) = (low, high);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match ts_at(mid)? {
            Some(ts) if ts < at_ms => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok((lo, FoundBy::Search))
}

/// At most `rate` records per second, evenly spaced; no burst builds up
/// while nothing is sent.
pub struct Pace {
    interval: Option<Duration>,
    next: tokio::time::Instant,
}

impl Pace {
    pub fn new(rate: Option<f64>) -> Self {
        Pace {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: tokio::time::Instant::now(),
        }
    }

    pub async fn wait(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = tokio::time::Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        self.next = self.next.max(now) + interval;
    }
}

/// A record to produce.
pub struct Outgoing {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// Sends `records` in order, paced, then waits for every acknowledgement.
/// Returns how many of the first records were acknowledged without a gap,
/// and the first failure (its index and error).
pub async fn send_window(
    producer: &FutureProducer,
    records: &[&Outgoing],
    pace: &mut Pace,
) -> (usize, Option<(usize, String)>) {
    let mut pending = Vec::with_capacity(records.len());
    let mut failure = None;
    'send: for (i, r) in records.iter().enumerate() {
        pace.wait().await;
        loop {
            let rec = FutureRecord::to(&r.topic)
                .key(&r.key)
                .payload(&r.payload)
                .headers(r.headers.clone());
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((e, _)) => {
                    failure = Some((i, e.to_string()));
                    break 'send;
                }
            }
        }
    }
    let mut acked = 0;
    for (i, f) in pending.into_iter().enumerate() {
        let result = match f.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_) => Err("the producer went away before the broker answered".to_string()),
        };
        match result {
            Ok(()) if acked == i => acked += 1,
            Ok(()) => {}
            Err(e) => {
                if failure.as_ref().is_none_or(|(at, _)| i < *at) {
                    failure = Some((i, e));
                }
            }
        }
    }
    if let Some((at, _)) = &failure {
        acked = acked.min(*at);
    }
    (acked, failure)
}
