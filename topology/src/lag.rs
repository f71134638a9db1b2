//! Consumer lag with a verdict: a monitor that samples every stage group's
//! committed offsets, the high watermarks and the group's members at a fixed
//! interval, keeps a sliding window of samples, and judges each partition
//! and group in the manner of LinkedIn's Burrow.
//!
//! Per partition, over the samples of the window (oldest to newest):
//!
//! 1. **REWIND** — the committed offset moved backwards between two samples
//!    (someone reset the group).
//! 2. **OK** — the lag was zero in at least one sample; or the partition is
//!    a retry tier whose next record waits for its due time (`not_before`
//!    header, plus [`RETRY_SLACK`]): retry consumers hold such records on
//!    purpose, up to the longest tier (600 s by default).
//! 3. **STOP** — the committed offset did not move in the whole window, the
//!    lag is above zero, and the group has no member: nobody consumes.
//! 4. **STALL** — the same, but the group has members (or they could not be
//!    read): consumers are there and make no progress.
//! 5. **WARN** — the committed offset moves but the lag grew or held in
//!    every interval: the group falls behind.
//! 6. otherwise **OK**.
//!
//! With fewer than [`MIN_SAMPLES`] samples the verdict rests on the lag alone
//! (zero: OK; above zero: WARN, "not enough samples yet"). A group's status
//! is its worst partition's, in the order OK < WARN < REWIND < STALL < STOP
//! < ERR, where **ERR** means the group's offsets or topics could not be
//! read at the last sample.
//!
//! Besides the verdict: offsets behind and seconds behind (the age of the
//! oldest unconsumed record, from its timestamp) per partition; the rate
//! at which the group's committed offsets advance and the topics grow; the
//! estimated time to drain (lag over the net rate; none when the lag does
//! not shrink); the depth of every dead-letter topic; and the backlog per
//! tenant, counted from record keys (`tenant:ticket`). Keys are read
//! incrementally: each sample reads at most `scan_records` records past
//! what was read before and forgets what the group has consumed since, so
//! a 100,000-record backlog is attributed over several samples (until then
//! the rest is reported as `unattributed`) and then costs only what arrives.
//!
//! Who monitors what (see [`MonitorScope`]): by default the process that
//! runs ingest (and serves `/dashboard` and `/api/v1/lag`) watches every
//! stage group, and a stage-only process watches the groups of its own
//! stages; several processes may therefore export the same group's gauges
//! (Prometheus keeps them apart by `instance`; the alert rules take `max by
//! (group)`). `ticketflow lag` samples by itself over `--window`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use sinks::metrics::metrics;
use sinks::now_ms;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::dataflow::{Dataflow, STAGES};
use crate::kafka::KafkaFactory;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Samples needed in the window before the offsets' movement is judged.
pub const MIN_SAMPLES: usize = 3;

/// How long past its due time a retry record may wait before a partition
/// that does not move is judged STALL/STOP.
pub const RETRY_SLACK: Duration = Duration::from_secs(60);

/// Points of lag history kept for the dashboard's chart.
const HISTORY_POINTS: usize = 360;

/// Most key runs kept per process for the tenant backlog (≈ 64 B each).
const MAX_RUNS: usize = 500_000;

/// Total lag per group at one time, for the dashboard's chart.
pub type HistoryPoint = (i64, Vec<(String, i64)>);

/// A partition's or group's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Ok,
    Warn,
    Rewind,
    Stall,
    Stop,
    Err,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Warn,
        Status::Err,
        Status::Stop,
        Status::Stall,
        Status::Rewind,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Rewind => "REWIND",
            Status::Stall => "STALL",
            Status::Stop => "STOP",
            Status::Err => "ERR",
        }
    }
}

/// One partition of one input topic of a group, at one sample.
#[derive(Debug, Clone)]
pub struct PartSample {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub low: i64,
    pub high: i64,
    pub seconds_behind: Option<f64>,
    /// The `not_before` header (epoch ms) of the next unconsumed record,
    /// on retry-tier topics.
    pub not_before: Option<i64>,
}

impl PartSample {
    /// Where the group resumes: its committed offset, or the low watermark
    /// when it has none (or retention removed what it pointed at).
    pub fn position(&self) -> i64 {
        self.committed.unwrap_or(self.low).max(self.low)
    }

    pub fn lag(&self) -> i64 {
        (self.high - self.position()).max(0)
    }
}

#[derive(Debug, Clone)]
pub struct GroupSample {
    pub group: String,
    pub stage: &'static str,
    /// Members the coordinator knows; `None` when that could not be read.
    pub members: Option<usize>,
    /// Why this group could not be read, if it could not.
    pub error: Option<String>,
    pub partitions: Vec<PartSample>,
    /// Records not yet consumed, per tenant (from keys read so far).
    pub tenants: BTreeMap<String, i64>,
    /// Records not yet consumed whose keys were not read yet.
    pub unattributed: i64,
}

#[derive(Debug, Clone)]
pub struct DlqSample {
    pub stage: &'static str,
    pub topic: String,
    pub depth: i64,
    pub high: i64,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at_ms: i64,
    pub groups: Vec<GroupSample>,
    pub dlq: Vec<DlqSample>,
}

/// One partition's verdict over a window.
pub fn judge_partition(points: &[&PartSample], members: Option<usize>, now_ms: i64) -> (Status, String) {
    let Some(last) = points.last() else {
        return (Status::Ok, "no samples".into());
    };
    for w in points.windows(2) {
        if let (Some(a), Some(b)) = (w[0].committed, w[1].committed) {
            if b < a {
                return (Status::Rewind, format!("committed offset moved back from {a} to {b}"));
            }
        }
    }
    if points.iter().any(|p| p.lag() == 0) {
        return (Status::Ok, "lag reached zero in the window".into());
    }
    if points.len() < MIN_SAMPLES {
        return (
            Status::Warn,
            format!(
                "lag {} and only {} of {MIN_SAMPLES} samples yet",
                last.lag(),
                points.len()
            ),
        );
    }
    if let Some(due) = last.not_before {
        if due + RETRY_SLACK.as_millis() as i64 > now_ms {
            return (
                Status::Ok,
                format!(
                    "the next record waits for its retry time (due in {:.0} s)",
                    ((due - now_ms).max(0) as f64) / 1000.0
                ),
            );
        }
    }
    let first = points[0];
    if first.committed == last.committed {
        return match members {
            Some(0) => (
                Status::Stop,
                format!(
                    "no member in the group; offset {} unchanged over the window while lag is {}",
                    last.position(),
                    last.lag()
                ),
            ),
            Some(n) => (
                Status::Stall,
                format!(
                    "{n} member(s) but offset {} unchanged over the window while lag is {}",
                    last.position(),
                    last.lag()
                ),
            ),
            None => (
                Status::Stall,
                format!(
                    "offset {} unchanged over the window while lag is {} (members unknown)",
                    last.position(),
                    last.lag()
                ),
            ),
        };
    }
    if points.windows(2).all(|w| w[1].lag() >= w[0].lag()) {
        return (
            Status::Warn,
            format!(
                "consuming, but lag grew or held in every interval ({} → {})",
                first.lag(),
                last.lag()
            ),
        );
    }
    (Status::Ok, "consuming; lag not growing".into())
}

/// Incremental count of unconsumed records per tenant for one partition:
/// runs of consecutive offsets with the same tenant, from `base` (the
/// group's position when last seen) to `scanned_to` (next offset to read).
#[derive(Debug, Default)]
struct TenantScan {
    base: i64,
    scanned_to: i64,
    /// (tenant, first offset, last offset), consecutive offsets.
    runs: VecDeque<(Arc<str>, i64, i64)>,
}

impl TenantScan {
    /// Forgets what the group consumed (offsets below `position`); starts
    /// over when the group moved back or past what was read.
    fn consume_to(&mut self, position: i64) {
        if position < self.base || position > self.scanned_to {
            self.runs.clear();
            self.base = position;
            self.scanned_to = position;
            return;
        }
        while let Some(front) = self.runs.front_mut() {
            if front.2 < position {
                self.runs.pop_front();
            } else {
                front.1 = front.1.max(position);
                break;
            }
        }
        self.base = position;
    }

    fn push(&mut self, tenant: Arc<str>, offset: i64) {
        match self.runs.back_mut() {
            Some(back) if back.0 == tenant && back.2 + 1 == offset => back.2 = offset,
            _ => self.runs.push_back((tenant, offset, offset)),
        }
        self.scanned_to = offset + 1;
    }

    fn add_counts(&self, into: &mut BTreeMap<String, i64>) {
        for (t, a, b) in &self.runs {
            *into.entry(t.to_string()).or_default() += b - a + 1;
        }
    }
}

/// The tenant of a record key `tenant:ticket`.
fn tenant_of(key: &[u8]) -> &str {
    let k = std::str::from_utf8(key).unwrap_or("");
    k.split_once(':').map(|(t, _)| t).unwrap_or("(no key)")
}

/// Which groups a monitor watches (`TICKETFLOW_LAG_MONITOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorScope {
    /// Every stage group where ingest runs, the own stages' groups elsewhere.
    Auto,
    All,
    Own,
    Off,
}

impl MonitorScope {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(MonitorScope::Auto),
            "all" => Ok(MonitorScope::All),
            "own" => Ok(MonitorScope::Own),
            "off" => Ok(MonitorScope::Off),
            other => Err(format!(
                "TICKETFLOW_LAG_MONITOR='{other}': expected auto, all, own or off"
            )),
        }
    }

    /// The stages to watch for a process running `components`.
    pub fn stages(self, components: &[String]) -> Vec<&'static str> {
        let own: Vec<&'static str> = STAGES
            .iter()
            .copied()
            .filter(|s| components.iter().any(|c| c == s))
            .collect();
        match self {
            MonitorScope::Off => vec![],
            MonitorScope::All => STAGES.to_vec(),
            MonitorScope::Own => own,
            MonitorScope::Auto if components.iter().any(|c| c == "ingest") => STAGES.to_vec(),
            MonitorScope::Auto => own,
        }
    }
}

/// Sampling settings.
#[derive(Debug, Clone)]
pub struct LagSettings {
    /// Time between samples (`TICKETFLOW_LAG_INTERVAL`, default 10 s).
    pub interval: Duration,
    /// Samples older than this are not judged (`TICKETFLOW_LAG_WINDOW`, default 2 min).
    pub window: Duration,
    /// Records whose keys one sample may read, all partitions together (`TICKETFLOW_LAG_SCAN_RECORDS`, default 10,000; 0 turns the tenant backlog off).
    pub scan_records: usize,
}

impl Default for LagSettings {
    fn default() -> Self {
        LagSettings {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(120),
            scan_records: 10_000,
        }
    }
}

pub struct LagMonitor {
    /// Whether samples set the process's lag gauges (only the process's
    /// own background monitor does; a one-off report must not leave series
    /// nobody refreshes).
    export: bool,
    /// One sample at a time; callers that arrive mid-sample wait for it.
    sampling: tokio::sync::Mutex<()>,
    factory: KafkaFactory,
    dataflow: Dataflow,
    stages: Vec<&'static str>,
    pub settings: LagSettings,
    samples: Mutex<VecDeque<Arc<Sample>>>,
    /// (at_ms, total lag per group) for the chart.
    history: Mutex<VecDeque<HistoryPoint>>,
    /// Only the sampler touches this (inside its blocking task).
    scans: Arc<Mutex<HashMap<(String, i32), TenantScan>>>,
}

impl LagMonitor {
    pub fn new(factory: KafkaFactory, dataflow: Dataflow, stages: Vec<&'static str>, settings: LagSettings) -> Self {
        LagMonitor {
            export: false,
            sampling: tokio::sync::Mutex::new(()),
            factory,
            dataflow,
            stages,
            settings,
            samples: Mutex::new(VecDeque::new()),
            history: Mutex::new(VecDeque::new()),
            scans: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// This monitor sets the lag gauges after every sample.
    pub fn exporting(mut self) -> Self {
        self.export = true;
        self
    }

    pub fn stages(&self) -> &[&'static str] {
        &self.stages
    }

    /// Takes a sample first when the newest is older than `max_age` (an API
    /// caller wants the numbers of now, not of the last interval).
    pub async fn sample_if_older(&self, max_age: Duration) -> Result<(), String> {
        let fresh = || {
            let newest = self.samples.lock().expect("lag samples lock").back().map(|s| s.at_ms);
            newest.is_some_and(|at| now_ms() - at <= max_age.as_millis() as i64)
        };
        if fresh() {
            return Ok(());
        }
        let _one = self.sampling.lock().await;
        // A sample that ended while this caller waited serves it too.
        if fresh() {
            return Ok(());
        }
        let had_samples = self.samples() > 0;
        match self.sample_once().await {
            Ok(()) => Ok(()),
            // The last report is better than none.
            Err(e) if had_samples => {
                warn!(error = %e, "lag sample failed; serving the previous one");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Samples in the window now.
    pub fn samples(&self) -> usize {
        self.samples.lock().expect("lag samples lock").len()
    }

    /// Takes one sample now (after any sample under way), keeps it in the
    /// window and, for an exporting monitor, updates the gauges.
    pub async fn sample_now(&self) -> Result<(), String> {
        let _one = self.sampling.lock().await;
        self.sample_once().await
    }

    async fn sample_once(&self) -> Result<(), String> {
        let (factory, dataflow, stages, scans, budget) = (
            self.factory.clone(),
            self.dataflow.clone(),
            self.stages.clone(),
            self.scans.clone(),
            self.settings.scan_records,
        );
        // On a thread of its own, not the runtime's blocking pool: a sample
        // against a broker that stopped answering sits in librdkafka's
        // timeouts, and a runtime shutting down waits for its blocking
        // tasks — a stopping process (or test) would wait for the sample.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("lag-sample".into())
            .spawn(move || {
                let _ = tx.send(take_sample(&factory, &dataflow, &stages, &scans, budget));
            })
            .map_err(|e| format!("starting a lag sample: {e}"))?;
        let sample = rx
            .await
            .map_err(|_| "the lag sample ended without an answer".to_string())??;
        let sample = Arc::new(sample);
        {
            let mut h = self.history.lock().expect("lag history lock");
            let totals = sample
                .groups
                .iter()
                .map(|g| (g.group.clone(), g.partitions.iter().map(PartSample::lag).sum()))
                .collect();
            h.push_back((sample.at_ms, totals));
            while h.len() > HISTORY_POINTS {
                h.pop_front();
            }
        }
        {
            let mut s = self.samples.lock().expect("lag samples lock");
            s.push_back(sample.clone());
            let oldest = sample.at_ms - self.settings.window.as_millis() as i64;
            // Never fewer than MIN_SAMPLES: when sampling is slower than
            // the window, the verdict still rests on the last few samples.
            while s.len() > MIN_SAMPLES && s.front().is_some_and(|x| x.at_ms < oldest) {
                s.pop_front();
            }
        }
        if self.export {
            export_gauges(&self.report());
        }
        Ok(())
    }

    /// The verdict over the current window, as JSON (the shape of
    /// `/api/v1/lag` and `ticketflow lag --json`).
    pub fn report(&self) -> Value {
        let samples: Vec<Arc<Sample>> = self.samples.lock().expect("lag samples lock").iter().cloned().collect();
        let history: Vec<HistoryPoint> = self.history.lock().expect("lag history lock").iter().cloned().collect();
        evaluate(&samples, &history, &self.settings)
    }

    /// Samples every `interval` until `stop`.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.sample_now().await {
                    warn!(error = %e, "lag sample failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(me.settings.interval) => {}
                }
            }
        });
    }
}

fn take_sample(
    factory: &KafkaFactory,
    dataflow: &Dataflow,
    stages: &[&'static str],
    scans: &Mutex<HashMap<(String, i32), TenantScan>>,
    budget: usize,
) -> Result<Sample, String> {
    let peeker = factory.peeker(None).map_err(|e| e.to_string())?;
    let reader = if budget > 0 {
        Some(factory.scanner().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut scans = scans.lock().expect("tenant scan lock");
    let mut left = budget;
    let mut groups = Vec::new();
    // Set when the broker itself does not answer: the other groups are not
    // tried (each try would wait out its timeouts) and show ERR at once.
    let mut trouble: Option<String> = None;
    for stage in stages {
        let group = dataflow.group(stage);
        let wiring = dataflow.wiring(stage, 1, Duration::ZERO);
        let mut g = GroupSample {
            group: group.clone(),
            stage,
            members: None,
            error: None,
            partitions: Vec::new(),
            tenants: BTreeMap::new(),
            unattributed: 0,
        };
        if let Some(t) = &trouble {
            g.error = Some(format!("not sampled: {t}"));
            groups.push(g);
            continue;
        }
        g.members = members_of(&peeker, &group);
        let offsets = factory.peeker(Some(&group)).map_err(|e| e.to_string())?;
        for input in &wiring.inputs {
            if let Err(e) = sample_topic(&offsets, &input.topic, &mut g) {
                if peeker.fetch_metadata(None, Duration::from_secs(3)).is_err() {
                    trouble = Some(format!("the broker does not answer ({e})"));
                }
                g.error = Some(e);
                break;
            }
        }
        if g.error.is_some() {
            groups.push(g);
            continue;
        }
        for p in &mut g.partitions {
            let lag = p.lag();
            if lag > 0 {
                (p.seconds_behind, p.not_before) = peek(&peeker, &p.topic, p.partition, p.position());
            }
            if let Some(reader) = &reader {
                let scan = scans.entry((p.topic.clone(), p.partition)).or_default();
                scan.consume_to(p.position());
                if scan.scanned_to < p.high && left > 0 && scans_len_ok(scan) {
                    let want = ((p.high - scan.scanned_to) as usize).min(left);
                    let read = scan_keys(reader, &p.topic, p.partition, scan, want);
                    left = left.saturating_sub(read);
                }
                scan.add_counts(&mut g.tenants);
                g.unattributed += (p.high - scan.scanned_to).max(0);
            } else {
                g.unattributed += lag;
            }
        }
        groups.push(g);
    }
    let total_runs: usize = scans.values().map(|s| s.runs.len()).sum();
    if total_runs > MAX_RUNS {
        // Keep memory bounded: forget every partition's keys; counting
        // starts over from the groups' positions at the next sample.
        scans.clear();
    }
    let mut dlq = Vec::new();
    for stage in STAGES.iter().filter(|_| trouble.is_none()) {
        let topic = dataflow.dlq(stage);
        let Ok(ps) = crate::ops::partitions_of(&peeker, &topic) else {
            continue;
        };
        let (mut depth, mut high_sum) = (0, 0);
        for p in ps {
            if let Ok((low, high)) = peeker.fetch_watermarks(&topic, p, TIMEOUT) {
                depth += (high - low).max(0);
                high_sum += high;
            }
        }
        dlq.push(DlqSample {
            stage,
            topic,
            depth,
            high: high_sum,
        });
    }
    Ok(Sample {
        at_ms: now_ms(),
        groups,
        dlq,
    })
}

fn scans_len_ok(scan: &TenantScan) -> bool {
    scan.runs.len() < MAX_RUNS
}

fn members_of(c: &BaseConsumer, group: &str) -> Option<usize> {
    let list = c.fetch_group_list(Some(group), Duration::from_secs(5)).ok()?;
    Some(
        list.groups()
            .iter()
            .filter(|g| g.name() == group)
            .map(|g| g.members().len())
            .sum(),
    )
}

fn sample_topic(c: &BaseConsumer, topic: &str, g: &mut GroupSample) -> Result<(), String> {
    let ps = crate::ops::partitions_of(c, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &ps {
        tpl.add_partition(topic, *p);
    }
    let committed = c
        .committed_offsets(tpl, TIMEOUT)
        .map_err(|e| format!("committed offsets of {}: {e}", g.group))?;
    for p in ps {
        let (low, high) = c
            .fetch_watermarks(topic, p, TIMEOUT)
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        let committed = committed.find_partition(topic, p).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        g.partitions.push(PartSample {
            topic: topic.to_string(),
            partition: p,
            committed,
            low,
            high,
            seconds_behind: None,
            not_before: None,
        });
    }
    Ok(())
}

/// The record at `offset`: its age in seconds (from its timestamp) and its
/// `not_before` header (retry tiers).
fn peek(c: &BaseConsumer, topic: &str, partition: i32, offset: i64) -> (Option<f64>, Option<i64>) {
    use rdkafka::message::Headers;
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .is_err()
        || c.assign(&tpl).is_err()
    {
        return (None, None);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.topic() == topic && m.partition() == partition && m.offset() >= offset => {
                let age = m
                    .timestamp()
                    .to_millis()
                    .map(|ts| (now_ms() - ts).max(0) as f64 / 1000.0);
                let not_before = m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == "not_before")
                        .and_then(|x| x.value)
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                });
                return (age, not_before);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => return (None, None),
            None => {}
        }
    }
    (None, None)
}

/// Reads up to `want` records from `scan.scanned_to` and records their
/// tenants; returns how many were read. Stops early (and resumes at the next
/// sample) at the partition's end or after 2 s.
fn scan_keys(c: &BaseConsumer, topic: &str, partition: i32, scan: &mut TenantScan, want: usize) -> usize {
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(topic, partition, Offset::Offset(scan.scanned_to))
        .is_err()
        || c.assign(&tpl).is_err()
    {
        return 0;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut read = 0;
    let mut interned: HashMap<String, Arc<str>> = HashMap::new();
    while read < want && std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.topic() != topic || m.partition() != partition || m.offset() < scan.scanned_to {
                    continue;
                }
                let tenant = tenant_of(m.key().unwrap_or_default());
                let t = match interned.get(tenant) {
                    Some(t) => t.clone(),
                    None => {
                        let t: Arc<str> = Arc::from(tenant);
                        interned.insert(tenant.to_string(), t.clone());
                        t
                    }
                };
                scan.push(t, m.offset());
                read += 1;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(_)) => break,
            None => {}
        }
    }
    read
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Judges a window of samples.
pub fn evaluate(samples: &[Arc<Sample>], history: &[HistoryPoint], settings: &LagSettings) -> Value {
    let Some(last) = samples.last() else {
        return json!({
            "at_ms": now_ms(),
            "window_seconds": settings.window.as_secs_f64(),
            "interval_seconds": settings.interval.as_secs_f64(),
            "samples": 0,
            "groups": [],
            "dlq": [],
            "history": [],
            "note": "no sample taken yet",
        });
    };
    let first = &samples[0];
    let span_s = ((last.at_ms - first.at_ms) as f64 / 1000.0).max(0.0);
    let mut groups = Vec::new();
    for g in &last.groups {
        let mut parts = Vec::new();
        let mut worst = if g.error.is_some() { Status::Err } else { Status::Ok };
        let mut worst_reason = g.error.clone().unwrap_or_default();
        let (mut consumed, mut produced) = (0i64, 0i64);
        let mut seconds_behind: Option<f64> = None;
        for p in &g.partitions {
            let points: Vec<&PartSample> = samples
                .iter()
                .filter_map(|s| s.groups.iter().find(|x| x.group == g.group))
                .filter_map(|x| {
                    x.partitions
                        .iter()
                        .find(|q| q.topic == p.topic && q.partition == p.partition)
                })
                .collect();
            let (status, reason) = judge_partition(&points, g.members, last.at_ms);
            if status > worst {
                worst = status;
                worst_reason = format!("{}/{}: {reason}", p.topic, p.partition);
            }
            if let Some(f) = points.first() {
                consumed += (p.position() - f.position()).max(0);
                produced += (p.high - f.high).max(0);
            }
            if let Some(s) = p.seconds_behind {
                seconds_behind = Some(seconds_behind.map_or(s, |o: f64| o.max(s)));
            }
            parts.push(json!({
                "topic": p.topic, "partition": p.partition, "committed": p.committed,
                "low": p.low, "high": p.high, "lag": p.lag(),
                "seconds_behind": p.seconds_behind, "oldest_unconsumed_age_seconds": p.seconds_behind,
                "status": status.as_str(), "reason": reason,
            }));
        }
        if worst == Status::Ok && worst_reason.is_empty() {
            worst_reason = "every partition OK".into();
        }
        let total: i64 = g.partitions.iter().map(PartSample::lag).sum();
        let (consume_rate, produce_rate) = if span_s > 0.0 {
            (consumed as f64 / span_s, produced as f64 / span_s)
        } else {
            (0.0, 0.0)
        };
        let net = consume_rate - produce_rate;
        let eta = if total == 0 {
            Some(0.0)
        } else if net > 0.0 {
            Some(round1(total as f64 / net))
        } else {
            None
        };
        let tenants: Vec<Value> = {
            let mut t: Vec<(&String, &i64)> = g.tenants.iter().filter(|(_, n)| **n > 0).collect();
            t.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            t.into_iter().map(|(t, n)| json!({"tenant": t, "backlog": n})).collect()
        };
        groups.push(json!({
            "group": g.group, "stage": g.stage, "status": worst.as_str(), "reason": worst_reason,
            "members": g.members, "total_lag": total,
            "seconds_behind": seconds_behind, "oldest_unconsumed_age_seconds": seconds_behind,
            "consume_rate": round1(consume_rate), "produce_rate": round1(produce_rate),
            "eta_seconds": eta,
            "tenants": tenants, "tenant_backlog_unattributed": g.unattributed,
            "partitions": parts,
        }));
    }
    let dlq: Vec<Value> = last
        .dlq
        .iter()
        .map(|d| {
            let before = first.dlq.iter().find(|x| x.topic == d.topic).map_or(d.high, |x| x.high);
            json!({"stage": d.stage, "topic": d.topic, "depth": d.depth, "added_in_window": (d.high - before).max(0)})
        })
        .collect();
    let history: Vec<Value> = history
        .iter()
        .map(|(at, totals)| {
            let lag: serde_json::Map<String, Value> = totals.iter().map(|(g, n)| (g.clone(), json!(n))).collect();
            json!({"at_ms": at, "lag": lag})
        })
        .collect();
    json!({
        "at_ms": last.at_ms,
        "window_seconds": settings.window.as_secs_f64(),
        "interval_seconds": settings.interval.as_secs_f64(),
        "samples": samples.len(),
        "span_seconds": span_s,
        "groups": groups,
        "dlq": dlq,
        "history": history,
    })
}

/// Sets the lag gauges from a report.
pub fn export_gauges(report: &Value) {
    let m = metrics();
    // Only the series of this report remain: a partition or group that
    // disappeared (or could not be read) does not keep its last value.
    m.consumer_lag.reset();
    m.consumer_lag_seconds.reset();
    m.consumer_group_status.reset();
    m.consumer_lag_drain_seconds.reset();
    m.consumer_group_rate.reset();
    m.dlq_depth.reset();
    for g in report["groups"].as_array().into_iter().flatten() {
        let group = g["group"].as_str().unwrap_or_default();
        let status = g["status"].as_str().unwrap_or("ERR");
        for s in Status::ALL {
            m.consumer_group_status
                .with_label_values(&[group, s.as_str()])
                .set(i64::from(s.as_str() == status));
        }
        let mut by_topic: BTreeMap<&str, f64> = BTreeMap::new();
        for p in g["partitions"].as_array().into_iter().flatten() {
            let topic = p["topic"].as_str().unwrap_or_default();
            m.consumer_lag
                .with_label_values(&[group, topic, &p["partition"].to_string()])
                .set(p["lag"].as_i64().unwrap_or(0));
            let age = p["seconds_behind"].as_f64().unwrap_or(0.0);
            let e = by_topic.entry(topic).or_default();
            *e = e.max(age);
        }
        for (topic, age) in by_topic {
            m.consumer_lag_seconds.with_label_values(&[group, topic]).set(age);
        }
        m.consumer_lag_drain_seconds
            .with_label_values(&[group])
            .set(g["eta_seconds"].as_f64().unwrap_or(-1.0));
        m.consumer_group_rate
            .with_label_values(&[group])
            .set(g["consume_rate"].as_f64().unwrap_or(0.0));
    }
    // Tenants that drained leave the gauge instead of staying at their last value.
    m.tenant_backlog.reset();
    for g in report["groups"].as_array().into_iter().flatten() {
        let group = g["group"].as_str().unwrap_or_default();
        for t in g["tenants"].as_array().into_iter().flatten() {
            m.tenant_backlog
                .with_label_values(&[group, t["tenant"].as_str().unwrap_or_default()])
                .set(t["backlog"].as_i64().unwrap_or(0));
        }
    }
    for d in report["dlq"].as_array().into_iter().flatten() {
        m.dlq_depth
            .with_label_values(&[d["stage"].as_str().unwrap_or_default()])
            .set(d["depth"].as_i64().unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(committed: Option<i64>, high: i64) -> PartSample {
        PartSample {
            topic: "t".into(),
            partition: 0,
            committed,
            low: 0,
            high,
            seconds_behind: None,
            not_before: None,
        }
    }

    fn judge(points: &[PartSample], members: Option<usize>) -> Status {
        let refs: Vec<&PartSample> = points.iter().collect();
        judge_partition(&refs, members, 1_000_000).0
    }

    #[test]
    fn a_retry_record_waiting_for_its_due_time_is_ok_and_stall_once_overdue() {
        let waiting = |nb: i64| {
            let mut v = [p(Some(5), 9), p(Some(5), 9), p(Some(5), 9)];
            v[2].not_before = Some(nb);
            v
        };
        // Due in 500 s (a 600 s tier): OK.
        assert_eq!(judge(&waiting(1_500_000), Some(1)), Status::Ok);
        // Due 30 s ago: within the slack.
        assert_eq!(judge(&waiting(970_000), Some(1)), Status::Ok);
        // Due 2 min ago and still not taken: STALL.
        assert_eq!(judge(&waiting(880_000), Some(1)), Status::Stall);
    }

    #[test]
    fn zero_lag_anywhere_in_the_window_is_ok() {
        assert_eq!(
            judge(&[p(Some(5), 9), p(Some(9), 9), p(Some(9), 12)], Some(1)),
            Status::Ok
        );
    }

    #[test]
    fn unchanged_offset_with_lag_is_stop_without_members_and_stall_with_them() {
        let w = [p(Some(5), 9), p(Some(5), 11), p(Some(5), 14)];
        assert_eq!(judge(&w, Some(0)), Status::Stop);
        assert_eq!(judge(&w, Some(2)), Status::Stall);
        assert_eq!(judge(&w, None), Status::Stall);
        // A group that never committed: its position is the low watermark.
        assert_eq!(judge(&[p(None, 3), p(None, 5), p(None, 8)], Some(0)), Status::Stop);
    }

    #[test]
    fn moving_offsets_with_lag_growing_every_interval_is_warn() {
        assert_eq!(
            judge(&[p(Some(1), 10), p(Some(3), 13), p(Some(5), 16)], Some(1)),
            Status::Warn
        );
        assert_eq!(
            judge(&[p(Some(1), 10), p(Some(8), 13), p(Some(12), 14)], Some(1)),
            Status::Ok
        );
    }

    #[test]
    fn offset_moving_back_is_rewind() {
        assert_eq!(
            judge(&[p(Some(9), 20), p(Some(2), 20), p(Some(4), 20)], Some(1)),
            Status::Rewind
        );
    }

    #[test]
    fn too_few_samples_judge_on_lag_alone() {
        assert_eq!(judge(&[p(Some(5), 9), p(Some(5), 9)], Some(0)), Status::Warn);
        assert_eq!(judge(&[p(Some(9), 9)], Some(0)), Status::Ok);
    }

    #[test]
    fn tenant_scan_counts_runs_and_forgets_what_was_consumed() {
        let mut s = TenantScan::default();
        s.consume_to(10);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("acme"), Arc::from("globex"));
        for o in 10..15 {
            s.push(a.clone(), o);
        }
        for o in 15..18 {
            s.push(b.clone(), o);
        }
        s.push(a.clone(), 18);
        let count = |s: &TenantScan| {
            let mut m = BTreeMap::new();
            s.add_counts(&mut m);
            m
        };
        assert_eq!(count(&s), BTreeMap::from([("acme".into(), 6), ("globex".into(), 3)]));
        s.consume_to(16);
        assert_eq!(count(&s), BTreeMap::from([("acme".into(), 1), ("globex".into(), 2)]));
        // Past what was read, or backwards: start over.
        s.consume_to(40);
        assert!(count(&s).is_empty());
        assert_eq!(s.scanned_to, 40);
        assert_eq!(tenant_of(b"acme:42"), "acme");
        assert_eq!(tenant_of(b""), "(no key)");
    }

    fn sample(at_ms: i64, committed: i64, high: i64, members: usize) -> Arc<Sample> {
        Arc::new(Sample {
            at_ms,
            groups: vec![GroupSample {
                group: "ticketflow.validate".into(),
                stage: "validate",
                members: Some(members),
                error: None,
                partitions: vec![p(Some(committed), high)],
                tenants: BTreeMap::from([("acme".into(), high - committed)]),
                unattributed: 0,
            }],
            dlq: vec![DlqSample {
                stage: "validate",
                topic: "ticketflow.validate.dlq".into(),
                depth: 2,
                high: at_ms / 1000,
            }],
        })
    }

    #[test]
    fn evaluation_gives_rates_eta_status_and_dlq_growth() {
        let s = vec![
            sample(0, 0, 100, 1),
            sample(10_000, 50, 120, 1),
            sample(20_000, 100, 140, 1),
        ];
        let r = evaluate(&s, &[], &LagSettings::default());
        let g = &r["groups"][0];
        assert_eq!(g["status"], "OK");
        assert_eq!(g["total_lag"], 40);
        assert_eq!(g["consume_rate"], 5.0);
        assert_eq!(g["produce_rate"], 2.0);
        // 40 records at a net 3/s.
        assert_eq!(g["eta_seconds"], 13.3);
        assert_eq!(g["tenants"][0]["backlog"], 40);
        assert_eq!(r["dlq"][0]["added_in_window"], 20);

        let stopped = vec![
            sample(0, 7, 100, 0),
            sample(10_000, 7, 120, 0),
            sample(20_000, 7, 140, 0),
        ];
        let r = evaluate(&stopped, &[], &LagSettings::default());
        assert_eq!(r["groups"][0]["status"], "STOP");
        assert_eq!(r["groups"][0]["eta_seconds"], Value::Null);
    }
}
