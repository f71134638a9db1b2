//! `ticketflow replay`: webhooks received in a time window, sent through
//! the dataflow again in one of two modes ([`ReplayMode`]).

use processors::headers::JobHeaders;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use schemas::{Codec, WebhookReceived};
use serde_json::{json, Value};
use sinks::now_ms;

use super::dlq::Report;
use super::reader::{self, FoundBy, Outgoing, Pace, PartitionReader, ReadRecord};
use super::{Filter, DEFAULT_BATCH, STALL_TIMEOUT};
use crate::ops::KafkaOps;

/// At most this many skipped records are listed in a summary (all are counted).
const LISTED_SKIPS: usize = 100;

/// How a replayed webhook goes through the dataflow again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayMode {
    /// A new job (new `job_id`, received now) that skips validate's
    /// duplicate check: the ticket is enhanced again and gets a new note.
    /// Its history row is new; it shares the original's `correlation_id`,
    /// and its records carry `replayed_from` (`topic/partition@offset`).
    ReEnhance,
    /// The same record again (same value, same `job_id` and headers, plus
    /// `redelivered_from`): the job is redone, and the update stage finds
    /// its note already posted, so no second note. For redoing jobs lost or
    /// failed after they were accepted.
    ReDeliver,
}

impl ReplayMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayMode::ReEnhance => "re-enhance",
            ReplayMode::ReDeliver => "re-deliver",
        }
    }
}

/// What `replay` does.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub mode: ReplayMode,
    /// Webhooks whose record timestamp is at or after this.
    pub from_ms: i64,
    /// `filter.to_ms`: reading stops at the first record at or after it;
    /// `filter.from_ms` is ignored (`from_ms` is the start).
    pub filter: Filter,
    pub batch: usize,
    pub rate: Option<f64>,
    pub dry_run: bool,
}

impl ReplayOptions {
    pub fn new(mode: ReplayMode, from_ms: i64) -> Self {
        ReplayOptions {
            mode,
            from_ms,
            filter: Filter::default(),
            batch: DEFAULT_BATCH,
            rate: None,
            dry_run: false,
        }
    }
}

/// What becomes of one webhook record.
enum Fate {
    Send(Box<Outgoing>, WebhookReceived, Option<String>),
    Excluded,
    Unusable(String),
}

fn fate(r: &ReadRecord, topic: &str, opts: &ReplayOptions) -> Fate {
    let w = match Codec::builtin().decode::<WebhookReceived>(&r.value) {
        Ok(w) => w,
        Err(e) => return Fate::Unusable(format!("unreadable webhook record: {e}")),
    };
    let filter = Filter {
        from_ms: Some(opts.from_ms),
        ..opts.filter.clone()
    };
    if filter
        .excludes(&w.meta.tenant_id, &w.meta.ticket_id, None, r.timestamp_ms)
        .is_some()
    {
        return Fate::Excluded;
    }
    let from = format!("{topic}/{}@{}", r.partition, r.offset);
    match opts.mode {
        ReplayMode::ReEnhance => {
            let mut new = w.clone();
            new.meta.job_id = uuid::Uuid::now_v7().to_string();
            new.meta.received_at_ms = now_ms();
            let headers = JobHeaders {
                correlation_id: new.meta.correlation_id.clone(),
                tenant_id: new.meta.tenant_id.clone(),
                job_id: new.meta.job_id.clone(),
                traceparent: processors::headers::new_traceparent(),
                attempt: 1,
                replayed_from: Some(from),
            };
            let payload = match Codec::builtin().encode(&new) {
                Ok(p) => p,
                Err(e) => return Fate::Unusable(format!("cannot encode the new job: {e}")),
            };
            let new_job = Some(new.meta.job_id.clone());
            let out = Outgoing {
                topic: topic.to_string(),
                key: new.meta.key(),
                payload,
                headers: headers.to_kafka(),
            };
            Fate::Send(Box::new(out), w, new_job)
        }
        ReplayMode::ReDeliver => {
            if JobHeaders::from_kafka(r.headers.as_ref()).is_err() {
                return Fate::Unusable("record without job headers".into());
            }
            // The same headers, attempt 1 again.
            let mut headers = OwnedHeaders::new();
            for h in r.headers.iter().flat_map(|h| h.iter()) {
                if h.key != "attempt" && h.key != "redelivered_from" {
                    headers = headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            let headers = headers
                .insert(Header {
                    key: "attempt",
                    value: Some("1"),
                })
                .insert(Header {
                    key: "redelivered_from",
                    value: Some(&from),
                });
            let out = Outgoing {
                topic: topic.to_string(),
                key: r.key.clone().unwrap_or_else(|| w.meta.key()),
                payload: r.value.clone(),
                headers,
            };
            Fate::Send(Box::new(out), w, None)
        }
    }
}

fn record_line(
    action: &str,
    r: &ReadRecord,
    w: Option<&WebhookReceived>,
    new_job: Option<&str>,
    reason: Option<&str>,
) -> Value {
    json!({
        "action": action,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp_ms": r.timestamp_ms,
        "tenant_id": w.map(|w| w.meta.tenant_id.as_str()),
        "ticket_id": w.map(|w| w.meta.ticket_id.as_str()),
        "event": w.map(|w| w.meta.event.as_str()),
        "job_id": w.map(|w| w.meta.job_id.as_str()),
        "new_job_id": new_job,
        "reason": reason,
    })
}

struct PartState {
    partition: i32,
    start: i64,
    end: i64,
    found_by: FoundBy,
    next: i64,
    stopped_by_to: Option<i64>,
    examined: u64,
    sent: u64,
    would_send: u64,
    excluded: u64,
    missing: i64,
}

impl PartState {
    fn json(&self) -> Value {
        json!({
            "partition": self.partition,
            "start": self.start,
            "end": self.end,
            "start_found_by": self.found_by.as_str(),
            "next": self.next,
            "stopped_at_to_offset": self.stopped_by_to,
            "examined": self.examined,
            "sent": self.sent,
            "would_send": self.would_send,
            "excluded": self.excluded,
            "missing": self.missing,
        })
    }
}

struct ReplaySummary {
    base: Value,
    parts: Vec<Value>,
    skipped: Vec<Value>,
    skipped_count: u64,
}

impl ReplaySummary {
    fn finish(&self) -> Value {
        let sum = |k: &str| self.parts.iter().map(|p| p[k].as_u64().unwrap_or(0)).sum::<u64>();
        let mut v = self.base.clone();
        v["examined"] = json!(sum("examined"));
        v["sent"] = json!(sum("sent"));
        v["would_send"] = json!(sum("would_send"));
        v["matched"] = json!(sum("sent") + sum("would_send"));
        v["excluded"] = json!(sum("excluded"));
        v["missing"] = json!(self
            .parts
            .iter()
            .map(|p| p["missing"].as_i64().unwrap_or(0))
            .sum::<i64>());
        v["skipped"] = json!(self.skipped);
        v["skipped_count"] = json!(self.skipped_count);
        v["partitions"] = json!(self.parts);
        v
    }
}

impl KafkaOps {
    /// Replays the webhooks received from `opts.from_ms` to `opts.filter.to_ms`
    /// (see [`ReplayMode`]); `on_record` sees one line per record sent, that
    /// would be sent (dry run), or that cannot be sent.
    pub async fn replay_with(&self, opts: &ReplayOptions, on_record: &mut (dyn FnMut(&Value) + Send)) -> Report {
        let topic = self.dataflow.webhooks();
        let mut summary = ReplaySummary {
            base: json!({
                "topic": topic,
                "mode": opts.mode.as_str(),
                "dry_run": opts.dry_run,
                "from_ms": opts.from_ms,
                "to_ms": opts.filter.to_ms,
                "tenant": opts.filter.tenant,
                "ticket": opts.filter.ticket,
                "batch": opts.batch,
                "rate": opts.rate,
            }),
            parts: Vec::new(),
            skipped: Vec::new(),
            skipped_count: 0,
        };
        let result = self.replay_run(&topic, opts, on_record, &mut summary).await;
        Report {
            summary: summary.finish(),
            failure: result.err(),
        }
    }

    async fn replay_run(
        &self,
        topic: &str,
        opts: &ReplayOptions,
        on_record: &mut (dyn FnMut(&Value) + Send),
        summary: &mut ReplaySummary,
    ) -> Result<(), String> {
        super::check_batch(opts.batch)?;
        super::check_rate(opts.rate)?;
        if let Some(to) = opts.filter.to_ms.filter(|to| *to <= opts.from_ms) {
            return Err(format!("--from {} must be before --to {to}", opts.from_ms));
        }
        // Every partition's range, captured before anything is sent: the
        // re-enhanced jobs written to the same topic are never read back.
        let (t, from_ms) = (topic.to_string(), opts.from_ms);
        let plan = self
            .blocking(move |factory, _| {
                let c = factory.reader(None).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                for (p, low, high) in reader::watermarks(&c, &t)? {
                    let (start, found_by) = reader::offset_at_time(&factory, &c, &t, p, low, high, from_ms)?;
                    out.push((p, start, high, found_by));
                }
                Ok(out)
            })
            .await?;
        let producer = if opts.dry_run {
            None
        } else {
            Some(
                self.factory
                    .producer(std::time::Duration::from_secs(30))
                    .map_err(|e| format!("creating a producer: {e}"))?,
            )
        };
        let mut pace = Pace::new(opts.rate);
        for (p, start, end, found_by) in plan {
            let mut part = PartState {
                partition: p,
                start,
                end,
                found_by,
                next: start,
                stopped_by_to: None,
                examined: 0,
                sent: 0,
                would_send: 0,
                excluded: 0,
                missing: 0,
            };
            let result = self
                .replay_partition(topic, opts, producer.as_ref(), &mut pace, &mut part, summary, on_record)
                .await;
            summary.parts.push(part.json());
            result?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn replay_partition(
        &self,
        topic: &str,
        opts: &ReplayOptions,
        producer: Option<&rdkafka::producer::FutureProducer>,
        pace: &mut Pace,
        part: &mut PartState,
        summary: &mut ReplaySummary,
        on_record: &mut (dyn FnMut(&Value) + Send),
    ) -> Result<(), String> {
        let (t, p, start, end) = (topic.to_string(), part.partition, part.start, part.end);
        let mut rd = self
            .blocking(move |factory, _| PartitionReader::open(&factory, None, &t, p, start, end, STALL_TIMEOUT))
            .await?;
        loop {
            let (batch, to_ms) = (opts.batch, opts.filter.to_ms);
            let (back, window) = self
                .blocking(move |_, _| {
                    let w = rd.next_window_until(batch, to_ms);
                    Ok((rd, w))
                })
                .await?;
            rd = back;
            part.missing = rd.missing;
            let (window, cut) = window?;
            let considered = &window[..cut.unwrap_or(window.len())];
            let fates: Vec<Fate> = considered.iter().map(|r| fate(r, topic, opts)).collect();
            let to_send: Vec<&Outgoing> = fates
                .iter()
                .filter_map(|f| match f {
                    Fate::Send(o, _, _) => Some(o.as_ref()),
                    _ => None,
                })
                .collect();
            let (acked, failure) = match producer {
                Some(prod) if !to_send.is_empty() => reader::send_window(prod, &to_send, pace).await,
                _ => (0, None),
            };
            let mut sent = 0;
            for (r, f) in considered.iter().zip(&fates) {
                match f {
                    Fate::Send(_, w, new_job) => {
                        if opts.dry_run {
                            part.would_send += 1;
                            on_record(&record_line("would_send", r, Some(w), None, None));
                        } else if sent < acked {
                            sent += 1;
                            part.sent += 1;
                            on_record(&record_line("sent", r, Some(w), new_job.as_deref(), None));
                        } else {
                            part.next = r.offset;
                            let why = failure.map_or_else(|| "not acknowledged".to_string(), |(_, e)| e);
                            return Err(format!(
                                "replaying {topic}/{p}@{} failed: {why}; the records of partition {p} before it were sent",
                                r.offset
                            ));
                        }
                    }
                    Fate::Excluded => part.excluded += 1,
                    Fate::Unusable(why) => {
                        summary.skipped_count += 1;
                        if summary.skipped.len() < LISTED_SKIPS {
                            summary
                                .skipped
                                .push(json!({"partition": p, "offset": r.offset, "reason": why}));
                        }
                        on_record(&record_line("skipped", r, None, None, Some(why)));
                    }
                }
                part.examined += 1;
                part.next = r.offset + 1;
            }
            if let Some(i) = cut {
                part.next = window[i].offset;
                part.stopped_by_to = Some(window[i].offset);
                return Ok(());
            }
            part.next = rd.next;
            if rd.at_end() {
                return Ok(());
            }
        }
    }
}
