//! Dead-letter topics: list, show one, retry.
//!
//! A retry re-sends each dead letter's payload to the topic it failed on
//! (an input of the stage: its main input or a retry tier; for `record`,
//! also another stage's DLQ) as attempt 1, with its job headers: the same
//! job, so the update stage's idempotency keeps it to one note.

use std::collections::HashSet;

use processors::headers::JobHeaders;
use rdkafka::message::Header;
use schemas::{Codec, FailureEnvelope};
use serde_json::{json, Value};

use super::reader::{self, Outgoing, Pace, PartitionReader, ReadRecord};
use super::{Filter, DEFAULT_BATCH, STALL_TIMEOUT};
use crate::dataflow::STAGES;
use crate::ops::KafkaOps;

/// At most this many skipped records are listed in a summary (all are counted).
const LISTED_SKIPS: usize = 100;

/// What `dlq retry` does.
#[derive(Debug, Clone)]
pub struct DlqRetryOptions {
    /// Exactly these records, even if retried before; filters do not apply
    /// and nothing is remembered. `None`: every record not retried before.
    pub records: Option<Vec<(i32, i64)>>,
    pub filter: Filter,
    /// Records read, re-sent and acknowledged per step.
    pub batch: usize,
    /// Records per second.
    pub rate: Option<f64>,
    pub dry_run: bool,
}

impl Default for DlqRetryOptions {
    fn default() -> Self {
        DlqRetryOptions {
            records: None,
            filter: Filter::default(),
            batch: DEFAULT_BATCH,
            rate: None,
            dry_run: false,
        }
    }
}

/// The end of an operation that re-sends records: its summary, and the
/// failure that stopped it early, if one did (the summary says what was
/// done before it).
#[derive(Debug, Clone)]
pub struct Report {
    pub summary: Value,
    pub failure: Option<String>,
}

impl Report {
    /// The summary, or the failure with what was done before it.
    pub fn into_result(self) -> Result<Value, String> {
        match self.failure {
            None => Ok(self.summary),
            Some(f) => Err(format!("{f} ({})", super::cli::done_before_failure(&self.summary))),
        }
    }
}

pub(crate) fn check_stage(stage: &str) -> Result<(), String> {
    if STAGES.contains(&stage) {
        Ok(())
    } else {
        Err(format!(
            "unknown stage '{stage}': expected one of {}",
            STAGES.join(", ")
        ))
    }
}

/// A dead letter as JSON: position, headers and the decoded envelope.
pub fn envelope_json(r: &ReadRecord) -> Value {
    let mut v = json!({
        "partition": r.partition,
        "offset": r.offset,
        "timestamp_ms": r.timestamp_ms,
        "key": r.key,
        "headers": {
            "correlation_id": r.header("correlation_id"),
            "tenant_id": r.header("tenant_id"),
            "job_id": r.header("job_id"),
            "attempt": r.header("attempt"),
            "error": r.header("error"),
            "error_class": r.header("error_class"),
            "failed_stage": r.header("failed_stage"),
            "original_topic": r.header("original_topic"),
        },
    });
    match Codec::builtin().decode::<FailureEnvelope>(&r.value) {
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

/// What becomes of one dead letter.
enum Fate {
    /// Re-send it.
    Send(Box<Outgoing>, Box<FailureEnvelope>),
    /// Left out by a filter: not re-sent, the position stays before it.
    Excluded,
    /// Can never be re-sent: reported, and the position moves past it.
    Unusable(String),
}

fn fate(r: &ReadRecord, stage: &str, dlq: &str, allowed: &HashSet<String>, filter: &Filter) -> Fate {
    let env = match Codec::builtin().decode::<FailureEnvelope>(&r.value) {
        Ok(e) => e,
        Err(e) => return Fate::Unusable(format!("unreadable envelope: {e}")),
    };
    if env.tenant_id.is_empty() || env.tenant_id == "unknown" || env.original_topic.is_empty() {
        return Fate::Unusable("poison record without job headers".into());
    }
    if !allowed.contains(&env.original_topic) {
        return Fate::Unusable(format!(
            "original topic {} is not an input of stage {stage}",
            env.original_topic
        ));
    }
    let class = r.header("error_class").unwrap_or_else(|| env.error_class.clone());
    if filter
        .excludes(&env.tenant_id, &env.ticket_id, Some(&class), r.timestamp_ms)
        .is_some()
    {
        return Fate::Excluded;
    }
    let headers = JobHeaders {
        correlation_id: env.correlation_id.clone(),
        tenant_id: env.tenant_id.clone(),
        job_id: env.job_id.clone(),
        traceparent: r
            .header("traceparent")
            .unwrap_or_else(processors::headers::new_traceparent),
        attempt: 1,
        // A re-send: it travels on (the end-to-end histogram leaves re-sent
        // jobs out). A record replayed earlier keeps its first origin.
        replayed_from: Some(
            r.header("replayed_from")
                .unwrap_or_else(|| format!("{dlq}/{}@{}", r.partition, r.offset)),
        ),
    };
    let from = format!("{dlq}/{}@{}", r.partition, r.offset);
    let out = Outgoing {
        topic: env.original_topic.clone(),
        key: r
            .key
            .clone()
            .unwrap_or_else(|| format!("{}:{}", env.tenant_id, env.ticket_id)),
        payload: env.payload.clone(),
        headers: headers.to_kafka().insert(Header {
            key: "retried_from",
            value: Some(&from),
        }),
    };
    Fate::Send(Box::new(out), Box::new(env))
}

/// One line of output about a record.
fn record_line(action: &str, r: &ReadRecord, env: Option<&FailureEnvelope>, reason: Option<&str>) -> Value {
    json!({
        "action": action,
        "partition": r.partition,
        "offset": r.offset,
        "tenant_id": env.map(|e| e.tenant_id.as_str()),
        "ticket_id": env.map(|e| e.ticket_id.as_str()),
        "job_id": env.map(|e| e.job_id.as_str()),
        "error_class": env.map(|e| e.error_class.as_str()),
        "error": env.map(|e| e.error.as_str()),
        "to_topic": env.map(|e| e.original_topic.as_str()),
        "reason": reason,
    })
}

impl KafkaOps {
    /// The last `limit` records of each partition of a stage's DLQ, oldest
    /// first, at most `limit` in all.
    pub async fn dlq_records(&self, stage: &str, limit: usize) -> Result<Value, String> {
        check_stage(stage)?;
        let stage = stage.to_string();
        self.blocking(move |factory, dataflow| {
            let topic = dataflow.dlq(&stage);
            let c = factory.reader(None).map_err(|e| e.to_string())?;
            let mut all = Vec::new();
            for (p, low, high) in reader::watermarks(&c, &topic)? {
                let from = high.saturating_sub(i64::try_from(limit).unwrap_or(i64::MAX)).max(low);
                let mut r = PartitionReader::open(&factory, None, &topic, p, from, high, STALL_TIMEOUT)?;
                while !r.at_end() {
                    all.extend(r.next_window(limit.max(1))?);
                }
            }
            all.sort_by_key(|r| (r.timestamp_ms.unwrap_or(0), r.partition, r.offset));
            let skip = all.len().saturating_sub(limit);
            let records: Vec<Value> = all[skip..].iter().map(envelope_json).collect();
            Ok(json!({"topic": topic, "count": records.len(), "records": records}))
        })
        .await
    }

    /// One DLQ record by its partition and offset, read directly.
    pub async fn dlq_record(&self, stage: &str, partition: i32, offset: i64) -> Result<Option<Value>, String> {
        check_stage(stage)?;
        let stage = stage.to_string();
        self.blocking(move |factory, dataflow| {
            let topic = dataflow.dlq(&stage);
            let c = factory.reader(None).map_err(|e| e.to_string())?;
            let Some((_, low, high)) = reader::watermarks(&c, &topic)?
                .into_iter()
                .find(|(p, _, _)| *p == partition)
            else {
                return Ok(None);
            };
            if offset < low || offset >= high {
                return Ok(None);
            }
            let rec = reader::read_at(&factory, &topic, partition, offset, offset + 1)?;
            Ok(rec.as_ref().filter(|r| r.offset == offset).map(envelope_json))
        })
        .await
    }

    /// `dlq retry` with the defaults of the admin API before it took
    /// options: every record not retried before, or exactly `offsets`.
    pub async fn dlq_retry_records(&self, stage: &str, offsets: Option<Vec<(i32, i64)>>) -> Result<Value, String> {
        let opts = DlqRetryOptions {
            records: offsets,
            ..DlqRetryOptions::default()
        };
        self.dlq_retry_with(stage, &opts, &mut |_| {}).await.into_result()
    }

    /// Re-sends dead letters of `stage` (see the module docs and
    /// [`super`]); `on_record` sees one line per record re-sent, that would
    /// be re-sent (dry run), or that can never be re-sent.
    pub async fn dlq_retry_with(
        &self,
        stage: &str,
        opts: &DlqRetryOptions,
        on_record: &mut (dyn FnMut(&Value) + Send),
    ) -> Report {
        let mut summary = Summary::new(stage, &self.dataflow, opts);
        let result = self.dlq_retry_run(stage, opts, on_record, &mut summary).await;
        Report {
            summary: summary.finish(),
            failure: result.err(),
        }
    }

    async fn dlq_retry_run(
        &self,
        stage: &str,
        opts: &DlqRetryOptions,
        on_record: &mut (dyn FnMut(&Value) + Send),
        summary: &mut Summary,
    ) -> Result<(), String> {
        check_stage(stage)?;
        super::check_batch(opts.batch)?;
        super::check_rate(opts.rate)?;
        let stage: &'static str = STAGES.iter().copied().find(|s| *s == stage).unwrap_or("validate");
        let topic = self.dataflow.dlq(stage);
        let remember = opts.records.is_none() && !opts.dry_run;
        // Unfiltered retries remember their progress in the stage's group; a
        // filtered retry in a group of its own (per tenant, ticket and error
        // class), starting where the unfiltered one stands: it passes the
        // records it leaves out, which stay for an unfiltered retry, and the
        // same filtered retry run again re-sends nothing it already re-sent.
        let base_group = format!("{}.dlq-retry.{stage}", self.dataflow.prefix);
        let group = match opts
            .records
            .is_none()
            .then(|| filter_group_suffix(&opts.filter))
            .flatten()
        {
            Some(suffix) => format!("{base_group}.{suffix}"),
            None => base_group.clone(),
        };
        let ctx = RetryCtx {
            stage,
            topic: topic.clone(),
            group: remember.then(|| group.clone()),
            allowed: self
                .dataflow
                .wiring(stage, 1, std::time::Duration::ZERO)
                .inputs
                .into_iter()
                .map(|i| i.topic)
                .collect(),
            // Named records are re-sent whatever the filters say.
            filter: if opts.records.is_some() {
                Filter::default()
            } else {
                opts.filter.clone()
            },
            batch: opts.batch,
            dry_run: opts.dry_run,
            producer: if opts.dry_run {
                None
            } else {
                Some(
                    self.factory
                        .producer(std::time::Duration::from_secs(30))
                        .map_err(|e| format!("creating a producer: {e}"))?,
                )
            },
        };
        let plan = self.retry_plan(&topic, &group, &base_group, &opts.records).await?;
        let mut pace = Pace::new(opts.rate);
        for range in plan {
            let mut part = PartSummary::new(&range);
            let result = self
                .retry_partition(&ctx, range, &mut part, &mut pace, summary, on_record)
                .await;
            summary.parts.push(part.finish());
            result?;
        }
        Ok(())
    }

    /// Each partition's range, captured before anything is sent, so records
    /// that fail again during this run wait for the next one.
    async fn retry_plan(
        &self,
        topic: &str,
        group: &str,
        base_group: &str,
        records: &Option<Vec<(i32, i64)>>,
    ) -> Result<Vec<Range>, String> {
        let (t, group, base, list) = (
            topic.to_string(),
            group.to_string(),
            base_group.to_string(),
            records.clone(),
        );
        self.blocking(move |factory, _| {
            let c = factory.reader(Some(&group)).map_err(|e| e.to_string())?;
            let marks = reader::watermarks(&c, &t)?;
            if let Some(list) = list {
                let mut out = Vec::new();
                for (p, o) in list {
                    let Some(&(_, low, high)) = marks.iter().find(|m| m.0 == p) else {
                        return Err(format!("{t} has no partition {p}"));
                    };
                    if o < low || o >= high {
                        return Err(format!(
                            "no record at {t}/{p}@{o}: the partition holds offsets {low} to {}",
                            high - 1
                        ));
                    }
                    out.push(Range {
                        partition: p,
                        from: o,
                        end: o + 1,
                        committed: None,
                    });
                }
                return Ok(out);
            }
            let ps: Vec<i32> = marks.iter().map(|m| m.0).collect();
            let mut done = reader::committed(&c, &t, &ps)?;
            if base != group {
                // A filtered retry starts no earlier than the unfiltered one.
                let b = factory.reader(Some(&base)).map_err(|e| e.to_string())?;
                let base_done = reader::committed(&b, &t, &ps)?;
                for (d, b) in done.iter_mut().zip(base_done) {
                    *d = match (*d, b) {
                        (Some(x), Some(y)) => Some(x.max(y)),
                        (x, y) => x.or(y),
                    };
                }
            }
            Ok(marks
                .iter()
                .zip(done)
                .map(|(&(p, low, high), done)| Range {
                    partition: p,
                    from: done.unwrap_or(low).clamp(low, high),
                    end: high,
                    committed: done,
                })
                .collect())
        })
        .await
    }

    async fn retry_partition(
        &self,
        ctx: &RetryCtx,
        range: Range,
        part: &mut PartSummary,
        pace: &mut Pace,
        summary: &mut Summary,
        on_record: &mut (dyn FnMut(&Value) + Send),
    ) -> Result<(), String> {
        let p = range.partition;
        let (t, g) = (ctx.topic.clone(), ctx.group.clone());
        let mut rd = self
            .blocking(move |factory, _| {
                PartitionReader::open(&factory, g.as_deref(), &t, p, range.from, range.end, STALL_TIMEOUT)
            })
            .await?;
        loop {
            let (batch, to_ms) = (ctx.batch, ctx.filter.to_ms);
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
            let window_end = cut.map_or(rd.next, |i| window[i].offset);
            let fates: Vec<Fate> = considered
                .iter()
                .map(|r| fate(r, ctx.stage, &ctx.topic, &ctx.allowed, &ctx.filter))
                .collect();
            let to_send: Vec<&Outgoing> = fates
                .iter()
                .filter_map(|f| match f {
                    Fate::Send(o, _) => Some(o.as_ref()),
                    _ => None,
                })
                .collect();
            let (acked, send_failure) = match &ctx.producer {
                Some(prod) if !to_send.is_empty() => reader::send_window(prod, &to_send, pace).await,
                _ => (0, None),
            };
            let mut sent = 0;
            let mut failed_at = None;
            for (r, f) in considered.iter().zip(&fates) {
                match f {
                    Fate::Send(_, env) if ctx.dry_run => {
                        part.examined += 1;
                        part.would_resend += 1;
                        on_record(&record_line("would_resend", r, Some(env), None));
                    }
                    Fate::Send(o, env) => {
                        if sent == acked {
                            failed_at = Some((r.offset, o.topic.clone()));
                            break;
                        }
                        sent += 1;
                        part.examined += 1;
                        part.resent += 1;
                        part.advance(r.offset + 1);
                        on_record(&record_line("resent", r, Some(env), None));
                    }
                    Fate::Excluded => {
                        part.examined += 1;
                        part.excluded += 1;
                        // Passed in this filter's own group only (see dlq_retry_run).
                        part.advance(r.offset + 1);
                    }
                    Fate::Unusable(why) => {
                        part.examined += 1;
                        part.advance(r.offset + 1);
                        summary.skip(r.partition, r.offset, why);
                        on_record(&record_line("skipped", r, None, Some(why)));
                    }
                }
            }
            if failed_at.is_none() {
                // Offsets the broker no longer has are passed too.
                part.advance(window_end);
            }
            if ctx.group.is_some() && part.position > part.committed_pos {
                let (t, pos) = (ctx.topic.clone(), part.position);
                let (back, committed) = self
                    .blocking(move |_, _| {
                        let r = reader::commit(rd.consumer(), &t, p, pos);
                        Ok((rd, r))
                    })
                    .await?;
                rd = back;
                committed.map_err(|e| {
                    format!("{e}; the records re-sent since the last commit will be re-sent again next time")
                })?;
                part.committed_pos = pos;
                part.remembered = Some(pos);
            }
            if let Some((at, dest)) = failed_at {
                let why = send_failure.map_or_else(|| "not acknowledged".to_string(), |(_, e)| e);
                return Err(format!(
                    "re-sending {}/{p}@{at} to {dest} failed: {why}; the position stays at that record",
                    ctx.topic
                ));
            }
            if cut.is_some() || rd.at_end() {
                return Ok(());
            }
        }
    }
}

/// What one retry run works with.
struct RetryCtx {
    stage: &'static str,
    topic: String,
    /// The group whose committed offsets remember how far retries got
    /// (none: named records or a dry run; nothing is remembered).
    group: Option<String>,
    allowed: HashSet<String>,
    filter: Filter,
    batch: usize,
    dry_run: bool,
    producer: Option<rdkafka::producer::FutureProducer>,
}

/// The part of one partition an operation covers.
#[derive(Debug, Clone, Copy)]
struct Range {
    partition: i32,
    from: i64,
    end: i64,
    committed: Option<i64>,
}

struct PartSummary {
    partition: i32,
    from: i64,
    end: i64,
    committed_before: Option<i64>,
    /// What the group has committed now (set by this run).
    remembered: Option<i64>,
    /// Where the group effectively stands.
    committed_pos: i64,
    /// The next offset not yet dealt with in an unbroken run.
    position: i64,
    examined: u64,
    resent: u64,
    would_resend: u64,
    excluded: u64,
    missing: i64,
}

impl PartSummary {
    fn new(r: &Range) -> Self {
        PartSummary {
            partition: r.partition,
            from: r.from,
            end: r.end,
            committed_before: r.committed,
            remembered: None,
            committed_pos: r.from,
            position: r.from,
            examined: 0,
            resent: 0,
            would_resend: 0,
            excluded: 0,
            missing: 0,
        }
    }

    /// Everything before `next` was dealt with.
    fn advance(&mut self, next: i64) {
        self.position = self.position.max(next);
    }

    fn finish(&self) -> Value {
        json!({
            "partition": self.partition,
            "from": self.from,
            "end": self.end,
            "committed_before": self.committed_before,
            "committed": self.remembered.or(self.committed_before),
            "position": self.position,
            "examined": self.examined,
            "resent": self.resent,
            "would_resend": self.would_resend,
            "excluded": self.excluded,
            "missing": self.missing,
        })
    }
}

pub(crate) struct Summary {
    base: Value,
    parts: Vec<Value>,
    skipped: Vec<Value>,
    skipped_count: u64,
}

impl Summary {
    fn new(stage: &str, dataflow: &crate::dataflow::Dataflow, opts: &DlqRetryOptions) -> Self {
        let remembered = opts.records.is_none() && !opts.dry_run;
        Summary {
            base: json!({
                "stage": stage,
                "topic": dataflow.dlq(stage),
                "group": remembered.then(|| format!("{}.dlq-retry.{stage}", dataflow.prefix)),
                "dry_run": opts.dry_run,
                "batch": opts.batch,
                "rate": opts.rate,
                "filter": {
                    "tenant": opts.filter.tenant, "ticket": opts.filter.ticket,
                    "error_class": opts.filter.error_class.map(|c| c.as_str()),
                    "from_ms": opts.filter.from_ms, "to_ms": opts.filter.to_ms,
                },
            }),
            parts: Vec::new(),
            skipped: Vec::new(),
            skipped_count: 0,
        }
    }

    fn skip(&mut self, partition: i32, offset: i64, reason: &str) {
        self.skipped_count += 1;
        if self.skipped.len() < LISTED_SKIPS {
            self.skipped
                .push(json!({"partition": partition, "offset": offset, "reason": reason}));
        }
    }

    fn finish(&self) -> Value {
        let sum = |k: &str| self.parts.iter().map(|p| p[k].as_u64().unwrap_or(0)).sum::<u64>();
        let mut v = self.base.clone();
        v["examined"] = json!(sum("examined"));
        v["resent"] = json!(sum("resent"));
        v["would_resend"] = json!(sum("would_resend"));
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

/// The group suffix of a filtered retry: `f` + 12 hex digits of a digest of
/// its tenant, ticket and error class (the time bounds change from run to
/// run and are left out); `None` without a filter or with `--to` alone.
fn filter_group_suffix(f: &super::Filter) -> Option<String> {
    use sha2::{Digest, Sha256};
    // `--to` alone is a cut, not a filter: everything before it is handled,
    // so the unfiltered group's position may move there.
    if f.tenant.is_none() && f.ticket.is_none() && f.error_class.is_none() && f.from_ms.is_none() {
        return None;
    }
    let key = format!(
        "tenant={}\nticket={}\nclass={}",
        f.tenant.as_deref().unwrap_or("*"),
        f.ticket.as_deref().unwrap_or("*"),
        f.error_class.map(|c| c.as_str()).unwrap_or("*")
    );
    let d = Sha256::digest(key.as_bytes());
    Some(format!(
        "f{}",
        d.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>()
    ))
}
