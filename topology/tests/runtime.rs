//! The stage runtime (`processors::runtime::run_stage`) against real brokers,
//! with test stages instead of the product's five: key-ordered parallelism
//! inside one partition, retry tiers that hold records until `not_before`,
//! the dead-letter topic for permanent failures and poison records, and no
//! loss through broker errors and a broker going down (librdkafka's mock
//! cluster).
//!
//! Run with `--nocapture` to see the measured numbers; `RUST_LOG=debug`
//! shows the runtime's own log, `RT_DEBUG=1` every retry's timing. The
//! tests at the end reproduce runtime bugs found here, now fixed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use processors::headers::{get_owned, new_traceparent, JobHeaders};
use processors::producer::DurableProducer;
use processors::{run_stage, Stage, StageFailure, StageInput, StageOutput, StageWiring};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use schemas::{Codec, FailureEnvelope, JobMeta, WebhookReceived};
use sinks::now_ms;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use topology::broker::EmbeddedBroker;
use topology::dataflow::{Dataflow, TopicSpec};
use topology::kafka::KafkaFactory;

// ---------------------------------------------------------------- helpers

fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An embedded broker in a temp dir (fields drop in order: broker first).
struct Env {
    factory: KafkaFactory,
    _broker: EmbeddedBroker,
    _dir: tempfile::TempDir,
}

async fn start_broker() -> Env {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let broker = EmbeddedBroker::start(addr, dir.path()).await.unwrap();
    let factory = KafkaFactory::new(addr.to_string());
    factory.wait_ready(Duration::from_secs(60)).await.unwrap();
    Env {
        factory,
        _broker: broker,
        _dir: dir,
    }
}

/// Every topic one stage's wiring names: inputs, retry tiers, output, DLQ.
fn topics_of(w: &StageWiring) -> Vec<String> {
    let mut t: Vec<String> = w.inputs.iter().map(|i| i.topic.clone()).collect();
    t.extend(w.retry_tiers.iter().map(|(n, _)| n.clone()));
    t.extend(w.output.clone());
    t.push(w.dlq.clone());
    t.sort();
    t.dedup();
    t
}

async fn create_topics(factory: &KafkaFactory, w: &StageWiring, partitions: i32) {
    let specs: Vec<TopicSpec> = topics_of(w)
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions,
            kind: topology::dataflow::TopicKind::Stream,
        })
        .collect();
    factory.create_topics(&specs).await.unwrap();
}

fn job_headers(job: &str) -> JobHeaders {
    JobHeaders {
        correlation_id: format!("corr-{job}"),
        tenant_id: "t".into(),
        job_id: job.into(),
        traceparent: new_traceparent(),
        attempt: 1,
        replayed_from: None,
    }
}

/// One record to produce.
struct Rec {
    topic: String,
    key: Option<String>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

impl Rec {
    fn job(topic: &str, key: &str, job: &str, payload: impl Into<Vec<u8>>) -> Rec {
        Rec {
            topic: topic.into(),
            key: Some(key.into()),
            payload: payload.into(),
            headers: Some(job_headers(job).to_kafka()),
        }
    }
}

/// Produces all records (pipelined, order kept per partition by the
/// idempotent producer); returns each one's (partition, offset).
async fn produce_all(producer: &FutureProducer, recs: &[Rec]) -> Vec<(i32, i64)> {
    let mut futs = Vec::with_capacity(recs.len());
    for r in recs {
        let mut fr = FutureRecord::<str, [u8]>::to(&r.topic).payload(r.payload.as_slice());
        if let Some(k) = &r.key {
            fr = fr.key(k.as_str());
        }
        if let Some(h) = &r.headers {
            fr = fr.headers(h.clone());
        }
        futs.push(producer.send_result(fr).map_err(|(e, _)| e).expect("enqueue"));
    }
    futures::future::join_all(futs)
        .await
        .into_iter()
        .map(|r| {
            let d = r.expect("delivery future").map_err(|(e, _)| e).expect("delivered");
            (d.partition, d.offset)
        })
        .collect()
}

/// A group-less consumer assigned to every partition of `topic` from the beginning.
fn reader_from_beginning(factory: &KafkaFactory, topic: &str, partitions: i32) -> BaseConsumer {
    let c: BaseConsumer = factory.reader(None).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

/// Reads a whole topic from the beginning: waits until at least `min`
/// records were read and every partition reached its end.
async fn read_topic(factory: &KafkaFactory, topic: &str, partitions: i32, min: usize) -> Vec<OwnedMessage> {
    let factory = factory.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c = reader_from_beginning(&factory, &topic, partitions);
        let mut out = Vec::new();
        let mut at_end: HashSet<i32> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    at_end.remove(&m.partition());
                    out.push(m.detach());
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => eprintln!("reading {topic}: {e}"),
                None => {}
            }
            if out.len() >= min && at_end.len() == partitions as usize {
                return out;
            }
        }
        panic!(
            "{topic}: read {} records (wanted at least {min}), partitions at end {at_end:?}",
            out.len()
        );
    })
    .await
    .unwrap()
}

fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    get_owned(m.headers(), name)
}

fn key_of(m: &OwnedMessage) -> String {
    m.key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default()
}

/// A running stage: its shutdown token and task.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn spawn_stage(
    factory: &KafkaFactory,
    wiring: StageWiring,
    producer: Arc<DurableProducer>,
    stage: Arc<dyn Stage>,
) -> Running {
    spawn_stage_on(&tokio::runtime::Handle::current(), factory, wiring, producer, stage)
}

/// Runs a stage on the given runtime (one runtime = one process, for restarts).
fn spawn_stage_on(
    rt: &tokio::runtime::Handle,
    factory: &KafkaFactory,
    wiring: StageWiring,
    producer: Arc<DurableProducer>,
    stage: Arc<dyn Stage>,
) -> Running {
    let shutdown = CancellationToken::new();
    let cc = factory.consumer_config();
    let token = shutdown.clone();
    let task = rt.spawn(async move {
        run_stage(wiring, cc, producer, stage, token).await.expect("run_stage");
    });
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stage stops within 30 s")
            .expect("stage task");
    }
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

// ------------------------------------------ 1. key order and parallelism

/// Sleeps 0–20 ms per record and records what ran when.
#[derive(Default)]
struct OrderStage {
    /// (key, seq) in the order handles started.
    log: Mutex<Vec<(String, u32)>>,
    /// Job ids handled, with repeats.
    jobs: Mutex<Vec<String>>,
    running_keys: Mutex<HashSet<String>>,
    current: AtomicUsize,
    max_concurrent: AtomicUsize,
    same_key_overlaps: AtomicUsize,
}

#[async_trait]
impl Stage for OrderStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let key = input.key.to_string();
        if !self.running_keys.lock().unwrap().insert(key.clone()) {
            self.same_key_overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_concurrent.fetch_max(now, Ordering::SeqCst);
        let seq: u32 = std::str::from_utf8(input.value).unwrap().parse().unwrap();
        self.log.lock().unwrap().push((key.clone(), seq));
        self.jobs.lock().unwrap().push(input.headers.job_id.clone());
        let ms = rand::random_range(0..=20u64);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.current.fetch_sub(1, Ordering::SeqCst);
        self.running_keys.lock().unwrap().remove(&key);
        Ok(StageOutput::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tickets_events_stay_in_order_among_500_others() {
    let env = start_broker().await;
    let flow = Dataflow::new("rt1", 1, vec![]);
    let max_in_flight = 64;
    let wiring = flow.wiring("validate", max_in_flight, Duration::from_secs(10));
    create_topics(&env.factory, &wiring, 1).await;
    let input = flow.input_of("validate");

    // 50 events of t:hot interleaved with 500 other tickets, one partition.
    let mut recs = Vec::new();
    let (mut hot, mut other) = (0u32, 0u32);
    for i in 0..550 {
        if i % 11 == 0 {
            recs.push(Rec::job(&input, "t:hot", &format!("hot-{hot}"), hot.to_string()));
            hot += 1;
        } else {
            recs.push(Rec::job(&input, &format!("t:k{other}"), &format!("k-{other}"), "0"));
            other += 1;
        }
    }
    assert_eq!((hot, other), (50, 500));
    let producer = env.factory.durable_producer(Duration::from_secs(10)).unwrap();
    let delivered = produce_all(&producer.current(), &recs).await;
    assert!(delivered.iter().all(|(p, _)| *p == 0));

    let stage = Arc::new(OrderStage::default());
    let started = Instant::now();
    let running = spawn_stage(&env.factory, wiring.clone(), producer.clone(), stage.clone());
    wait_until("550 records handled", Duration::from_secs(50), || {
        stage.log.lock().unwrap().len() >= 550
    })
    .await;
    let took = started.elapsed();
    running.stop().await;

    let log = stage.log.lock().unwrap().clone();
    let hot_seq: Vec<u32> = log.iter().filter(|(k, _)| k == "t:hot").map(|(_, s)| *s).collect();
    let max_concurrent = stage.max_concurrent.load(Ordering::SeqCst);
    let overlaps = stage.same_key_overlaps.load(Ordering::SeqCst);
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for j in stage.jobs.lock().unwrap().iter() {
        *per_job.entry(j.clone()).or_default() += 1;
    }
    println!(
        "key order: 550 records on 1 partition handled in {took:?}; max concurrent handles {max_concurrent} \
         (max_in_flight {max_in_flight}); same-key overlaps {overlaps}"
    );
    assert_eq!(
        hot_seq,
        (0..50).collect::<Vec<u32>>(),
        "t:hot handled in order, exactly once"
    );
    assert_eq!(log.len(), 550, "every record handled once");
    assert_eq!(per_job.len(), 550);
    assert!(per_job.values().all(|n| *n == 1), "no record handled twice");
    assert!(
        max_concurrent > 1,
        "records of different keys ran in parallel inside one partition"
    );
    assert!(
        max_concurrent <= max_in_flight,
        "never more than max_in_flight running: {max_concurrent}"
    );
    assert_eq!(overlaps, 0, "two records of one key ran at the same time");

    // Contiguous commits: after the drain everything is committed.
    let factory = env.factory.clone();
    let (group, topic) = (wiring.group.clone(), input.clone());
    let committed = tokio::task::spawn_blocking(move || {
        let c = factory.reader(Some(&group)).unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        got.find_partition(&topic, 0).unwrap().offset()
    })
    .await
    .unwrap();
    assert_eq!(
        committed,
        Offset::Offset(550),
        "group committed every record after the drain"
    );
}

// ------------------------------------------------------- 2. retry tiers

#[derive(Debug, Clone)]
struct Attempt {
    job: String,
    attempt: i32,
    at_ms: i64,
    topic: String,
    payload_ok: bool,
}

/// Fails `r-<i>` retryably 1 + i % 2 times, `late` once with a 900 ms
/// Retry-After, `perm` permanently, `exhaust` always retryably.
#[derive(Default)]
struct RetryStage {
    log: Mutex<Vec<Attempt>>,
    /// (job, attempt) → when the failure was returned.
    failed_at: Mutex<HashMap<(String, i32), i64>>,
    succeeded: Mutex<HashSet<String>>,
}

#[async_trait]
impl Stage for RetryStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let at_ms = now_ms();
        let job = input.headers.job_id.clone();
        let attempt = input.attempt;
        self.log.lock().unwrap().push(Attempt {
            job: job.clone(),
            attempt,
            at_ms,
            topic: input.topic.to_string(),
            payload_ok: input.value == format!("payload-{job}").as_bytes(),
        });
        let failure = if let Some(i) = job.strip_prefix("r-") {
            let fails = 1 + i.parse::<i32>().unwrap() % 2;
            (attempt <= fails).then(|| StageFailure::retryable("flaky dependency", None))
        } else {
            match job.as_str() {
                "late" => {
                    (attempt == 1).then(|| StageFailure::retryable("slow down", Some(Duration::from_millis(900))))
                }
                "perm" => Some(StageFailure::permanent("bad input: field x is not a date")),
                "exhaust" => Some(StageFailure::retryable("still down", None)),
                other => panic!("unknown job {other}"),
            }
        };
        match failure {
            Some(f) => {
                self.failed_at.lock().unwrap().insert((job, attempt), now_ms());
                Err(f)
            }
            None => {
                self.succeeded.lock().unwrap().insert(job);
                Ok(StageOutput::Done)
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_tiers_hold_records_until_not_before_and_measure_lateness() {
    let env = start_broker().await;
    let tiers = [Duration::from_millis(300), Duration::from_millis(600)];
    let partitions = 3;
    let flow = Dataflow::new("rt2", partitions, tiers.to_vec());
    let wiring = flow.wiring("validate", 64, Duration::from_secs(10));
    create_topics(&env.factory, &wiring, partitions).await;
    let input = flow.input_of("validate");

    let mut jobs: Vec<String> = (0..20).map(|i| format!("r-{i}")).collect();
    jobs.extend(["late", "perm", "exhaust"].map(String::from));
    let recs: Vec<Rec> = jobs
        .iter()
        .map(|j| Rec::job(&input, &format!("t:{j}"), j, format!("payload-{j}")))
        .collect();
    let producer = env.factory.durable_producer(Duration::from_secs(10)).unwrap();
    let stage = Arc::new(RetryStage::default());
    let running = spawn_stage(&env.factory, wiring.clone(), producer.clone(), stage.clone());
    let delivered: HashMap<String, (i32, i64)> = jobs
        .iter()
        .cloned()
        .zip(produce_all(&producer.current(), &recs).await)
        .collect();

    wait_until("every job succeeded or exhausted", Duration::from_secs(45), || {
        let attempts = |j: &str| stage.log.lock().unwrap().iter().filter(|a| a.job == j).count();
        stage.succeeded.lock().unwrap().len() == 21 && attempts("exhaust") == 3 && attempts("perm") == 1
    })
    .await;
    running.stop().await;

    let log = stage.log.lock().unwrap().clone();
    let failed_at = stage.failed_at.lock().unwrap().clone();
    assert!(
        log.iter().all(|a| a.payload_ok),
        "every attempt saw the original payload"
    );
    // Attempts: fails + 1 per r-job, 2 for late, 1 for perm, 3 for exhaust — each exactly once.
    let mut count: HashMap<(String, i32), usize> = HashMap::new();
    for a in &log {
        *count.entry((a.job.clone(), a.attempt)).or_default() += 1;
    }
    assert!(count.values().all(|n| *n == 1), "an attempt ran twice: {count:?}");
    let expected_attempts = 20 + 10 + 2 + 1 + 3 + 20;
    assert_eq!(log.len(), expected_attempts, "{log:?}");

    // Every retry record: due time honoured, lateness measured.
    let handled: HashMap<(String, i32), &Attempt> = log.iter().map(|a| ((a.job.clone(), a.attempt), a)).collect();
    let mut lateness: Vec<i64> = Vec::new();
    // (tier, partition, offset, lateness, job)
    let mut samples: Vec<(i32, i32, i64, i64, String)> = Vec::new();
    let mut early = Vec::new();
    for (n, (tier_topic, delay)) in wiring.retry_tiers.iter().enumerate() {
        let n = n as i32 + 1;
        let want = if n == 1 { 22 } else { 11 };
        let recs = read_topic(&env.factory, tier_topic, partitions, want).await;
        assert_eq!(recs.len(), want, "{tier_topic}");
        for m in &recs {
            let job = header(m, "job_id").unwrap().to_string();
            let attempt: i32 = header(m, "attempt").unwrap().parse().unwrap();
            let not_before: i64 = header(m, "not_before").unwrap().parse().unwrap();
            assert_eq!(attempt, n, "tier {n} holds the records that failed {n} times");
            assert_eq!(header(m, "error_class"), Some("retryable"));
            assert_eq!(header(m, "failed_stage"), Some("validate"));
            assert_eq!(header(m, "original_topic"), Some(input.as_str()));
            let (p, o) = delivered[&job];
            assert_eq!(header(m, "original_partition"), Some(p.to_string().as_str()));
            assert_eq!(header(m, "original_offset"), Some(o.to_string().as_str()));
            assert_eq!(header(m, "correlation_id"), Some(format!("corr-{job}").as_str()));
            let env: FailureEnvelope = Codec::builtin().decode(m.payload().unwrap()).unwrap();
            assert_eq!(env.payload, format!("payload-{job}").into_bytes());
            assert_eq!(env.not_before_ms, not_before);
            // not_before = failure + the tier's delay (or the longer Retry-After).
            let delay = if job == "late" {
                Duration::from_millis(900)
            } else {
                *delay
            };
            let failed = failed_at[&(job.clone(), attempt)];
            let set_after = not_before - failed;
            assert!(
                set_after >= delay.as_millis() as i64 && set_after < delay.as_millis() as i64 + 1000,
                "{job} attempt {attempt}: not_before {set_after} ms after the failure, tier delay {delay:?}"
            );
            // The next attempt ran from this tier, not before not_before.
            let next = handled
                .get(&(job.clone(), attempt + 1))
                .unwrap_or_else(|| panic!("{job} attempt {} never ran", attempt + 1));
            assert_eq!(&next.topic, tier_topic);
            let late_ms = next.at_ms - not_before;
            if late_ms < -5 {
                early.push(format!("{job} attempt {} ran {} ms early", attempt + 1, -late_ms));
            }
            samples.push((n, m.partition(), m.offset(), late_ms, job.clone()));
            if std::env::var_os("RT_DEBUG").is_some() {
                println!(
                    "tier {n} p{} o{} {job} a{attempt}: failed {failed} nb {not_before} (+{set_after}) ran {late_ms} ms late",
                    m.partition(),
                    m.offset()
                );
            }
            lateness.push(late_ms);
        }
    }
    lateness.sort();
    let (p50, p90, max) = (
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.9),
        *lateness.last().unwrap(),
    );
    println!(
        "retry lateness (attempt start - not_before) over {} retries, tiers {tiers:?}: p50 {p50} ms, p90 {p90} ms, max {max} ms, min {} ms",
        lateness.len(),
        lateness[0]
    );
    // The first record of each tier partition is released by the runtime's
    // timer; the ones behind it are fetched only after its partition resumes.
    let mut heads: HashMap<(i32, i32), i64> = HashMap::new();
    for (n, p, o, _, _) in &samples {
        let h = heads.entry((*n, *p)).or_insert(*o);
        *h = (*h).min(*o);
    }
    let (mut head, mut behind): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    for (n, p, o, late, _) in &samples {
        if heads[&(*n, *p)] == *o {
            head.push(*late)
        } else {
            behind.push(*late)
        }
    }
    head.sort();
    behind.sort();
    let worst = samples.iter().max_by_key(|s| s.3).unwrap();
    println!(
        "  first record of its tier partition: max {} ms over {}; records behind it: p50 {} ms, max {} ms over {}; \
         worst: {} (tier {} partition {} offset {})",
        head.last().copied().unwrap_or_default(),
        head.len(),
        percentile(&behind, 0.5),
        behind.last().copied().unwrap_or_default(),
        behind.len(),
        worst.4,
        worst.0,
        worst.1,
        worst.2
    );
    assert!(early.is_empty(), "attempts ran before not_before: {early:?}");
    assert!(max < 2000, "a due retry ran {max} ms late");

    // The DLQ: perm at once, exhaust after the last tier.
    let dlq = read_topic(&env.factory, &wiring.dlq, partitions, 2).await;
    assert_eq!(dlq.len(), 2);
    let by_job: HashMap<&str, &OwnedMessage> = dlq.iter().map(|m| (header(m, "job_id").unwrap(), m)).collect();
    let perm = by_job["perm"];
    let (p, o) = delivered["perm"];
    assert_eq!(header(perm, "error"), Some("bad input: field x is not a date"));
    assert_eq!(header(perm, "error_class"), Some("permanent"));
    assert_eq!(header(perm, "failed_stage"), Some("validate"));
    assert_eq!(header(perm, "original_topic"), Some(input.as_str()));
    assert_eq!(header(perm, "original_partition"), Some(p.to_string().as_str()));
    assert_eq!(header(perm, "original_offset"), Some(o.to_string().as_str()));
    assert_eq!(header(perm, "correlation_id"), Some("corr-perm"));
    assert_eq!(header(perm, "tenant_id"), Some("t"));
    assert_eq!(header(perm, "attempt"), Some("1"));
    assert_eq!(header(perm, "not_before"), None, "a DLQ record is not scheduled");
    assert_eq!(key_of(perm), "t:perm");
    let env_perm: FailureEnvelope = Codec::builtin().decode(perm.payload().unwrap()).unwrap();
    assert_eq!(env_perm.payload, b"payload-perm");
    assert_eq!(env_perm.error_class, "permanent");
    assert_eq!(
        log.iter().filter(|a| a.job == "perm").count(),
        1,
        "a permanent failure is not retried"
    );

    let exhaust = by_job["exhaust"];
    let (p, o) = delivered["exhaust"];
    assert_eq!(header(exhaust, "error"), Some("still down"));
    assert_eq!(header(exhaust, "error_class"), Some("retryable"));
    assert_eq!(header(exhaust, "attempt"), Some("3"));
    assert_eq!(
        header(exhaust, "original_topic"),
        Some(input.as_str()),
        "the DLQ names the record's first topic, not the last tier"
    );
    assert_eq!(header(exhaust, "original_partition"), Some(p.to_string().as_str()));
    assert_eq!(header(exhaust, "original_offset"), Some(o.to_string().as_str()));
    assert_eq!(header(exhaust, "correlation_id"), Some("corr-exhaust"));
}

// ----------------------------------------------------- 3. poison records

/// Decodes like the product's stages (`stages::decode`) and forwards.
#[derive(Default)]
struct DecodingStage {
    handled: Mutex<Vec<String>>,
}

#[async_trait]
impl Stage for DecodingStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        self.handled.lock().unwrap().push(input.headers.job_id.clone());
        let rec: WebhookReceived = Codec::builtin()
            .decode(input.value)
            .map_err(|e| StageFailure::permanent(format!("poison record: {e}")))?;
        let out = Codec::builtin()
            .encode(&rec)
            .map_err(|e| StageFailure::permanent(e.to_string()))?;
        Ok(StageOutput::Forward(out))
    }
}

fn webhook(job: &str, ticket: &str) -> Vec<u8> {
    Codec::builtin()
        .encode(&WebhookReceived {
            meta: JobMeta {
                job_id: job.into(),
                correlation_id: format!("corr-{job}"),
                tenant_id: "t".into(),
                ticket_id: ticket.into(),
                event: "request_created".into(),
                webhook_id: format!("wh-{job}"),
                received_at_ms: now_ms(),
            },
            payload_json: "{}".into(),
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_go_to_the_dlq_and_the_stage_keeps_running() {
    let env = start_broker().await;
    let flow = Dataflow::new("rt3", 1, vec![Duration::from_millis(200)]);
    let wiring = flow.wiring("validate", 64, Duration::from_secs(10));
    create_topics(&env.factory, &wiring, 1).await;
    let input = flow.input_of("validate");
    let output = flow.output_of("validate").unwrap();
    let tier1 = wiring.retry_tiers[0].0.clone();

    let past = (now_ms() - 1000).to_string();
    let recs = vec![
        // (a) no headers at all.
        Rec {
            topic: input.clone(),
            key: Some("t:noheaders".into()),
            payload: webhook("noheaders", "noheaders"),
            headers: None,
        },
        // (a') no key, no headers.
        Rec {
            topic: input.clone(),
            key: None,
            payload: b"nothing at all".to_vec(),
            headers: None,
        },
        // (b) headers, but bytes that are no Avro record.
        Rec::job(&input, "t:garbage", "garbage", b"\x00\x01 this is not avro".to_vec()),
        // (c) a retry-tier record whose value is no failure envelope.
        Rec {
            topic: tier1.clone(),
            key: Some("t:badretry".into()),
            payload: b"not an envelope".to_vec(),
            headers: Some(job_headers("badretry").to_kafka().insert(rdkafka::message::Header {
                key: "not_before",
                value: Some(past.as_str()),
            })),
        },
        // (d) a good record after the poison.
        Rec::job(&input, "t:good", "good", webhook("good", "good")),
    ];
    let producer = env.factory.durable_producer(Duration::from_secs(10)).unwrap();
    let delivered = produce_all(&producer.current(), &recs).await;
    let stage = Arc::new(DecodingStage::default());
    let running = spawn_stage(&env.factory, wiring.clone(), producer.clone(), stage.clone());
    wait_until("the good record handled", Duration::from_secs(40), || {
        stage.handled.lock().unwrap().iter().any(|j| j == "good")
    })
    .await;

    let dlq = read_topic(&env.factory, &wiring.dlq, 1, 4).await;
    assert_eq!(dlq.len(), 4, "four poison records dead-lettered");
    let by_key: HashMap<String, &OwnedMessage> = dlq.iter().map(|m| (key_of(m), m)).collect();
    let check = |key: &str, i: usize, topic: &str, error_has: &[&str], corr: &str| {
        let m = by_key
            .get(key)
            .unwrap_or_else(|| panic!("no DLQ record for key {key:?}: {:?}", by_key.keys()));
        let error = header(m, "error").unwrap_or_default();
        println!("DLQ {key:?}: error = {error}");
        for part in error_has {
            assert!(error.contains(part), "{key}: error {error:?} should mention {part:?}");
        }
        assert_eq!(header(m, "error_class"), Some("permanent"), "{key}");
        assert_eq!(header(m, "failed_stage"), Some("validate"), "{key}");
        assert_eq!(header(m, "original_topic"), Some(topic), "{key}");
        assert_eq!(
            header(m, "original_offset"),
            Some(delivered[i].1.to_string().as_str()),
            "{key}"
        );
        assert_eq!(header(m, "original_partition"), Some("0"), "{key}");
        assert_eq!(header(m, "correlation_id"), Some(corr), "{key}");
        let env: FailureEnvelope = Codec::builtin().decode(m.payload().unwrap()).unwrap();
        assert_eq!(env.payload, recs[i].payload, "{key}: the DLQ keeps the original bytes");
    };
    check(
        "t:noheaders",
        0,
        &input,
        &["poison record", "correlation_id"],
        "unknown",
    );
    check("", 1, &input, &["poison record", "correlation_id"], "unknown");
    check("t:garbage", 2, &input, &["poison record"], "corr-garbage");
    check("t:badretry", 3, &tier1, &["poison retry record"], "corr-badretry");

    // Still running: a record produced after the poison is handled too.
    produce_all(
        &producer.current(),
        &[Rec::job(&input, "t:good2", "good2", webhook("good2", "good2"))],
    )
    .await;
    wait_until("a later good record handled", Duration::from_secs(20), || {
        stage.handled.lock().unwrap().iter().any(|j| j == "good2")
    })
    .await;
    running.stop().await;

    let mut handled = stage.handled.lock().unwrap().clone();
    handled.sort();
    assert_eq!(
        handled,
        vec!["garbage", "good", "good2"],
        "records without headers and broken retry envelopes never reach the stage"
    );
    let out = read_topic(&env.factory, &output, 1, 2).await;
    let out_jobs: Vec<&str> = out.iter().map(|m| header(m, "job_id").unwrap()).collect();
    assert_eq!(out_jobs, vec!["good", "good2"]);
    let fwd: WebhookReceived = Codec::builtin().decode(out[0].payload().unwrap()).unwrap();
    assert_eq!(fwd.meta.job_id, "good");
}

// ---------------------------------------- 4. broker faults (mock cluster)

/// Forwards every record as it is.
#[derive(Default)]
struct ForwardStage {
    handled: Mutex<Vec<String>>,
}

#[async_trait]
impl Stage for ForwardStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        self.handled.lock().unwrap().push(input.headers.job_id.clone());
        Ok(StageOutput::Forward(input.value.to_vec()))
    }
}

impl ForwardStage {
    fn distinct(&self) -> usize {
        self.handled.lock().unwrap().iter().collect::<HashSet<_>>().len()
    }
}

/// A configuration value of a live client, as librdkafka resolved it.
fn effective_config(producer: &FutureProducer, name: &str) -> String {
    use rdkafka::bindings::{rd_kafka_conf, rd_kafka_conf_get, rd_kafka_conf_res_t};
    use std::ffi::{CStr, CString};
    let cname = CString::new(name).unwrap();
    let mut buf = vec![0 as std::os::raw::c_char; 512];
    let mut size = buf.len();
    // SAFETY: the client outlives the call; librdkafka writes at most `size` bytes into `buf`.
    unsafe {
        let conf = rd_kafka_conf(producer.client().native_ptr());
        let res = rd_kafka_conf_get(conf, cname.as_ptr(), buf.as_mut_ptr(), &mut size);
        assert_eq!(res, rd_kafka_conf_res_t::RD_KAFKA_CONF_OK, "config {name}");
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

/// A 3-broker mock cluster with the stage's topics: input led by broker 1,
/// output by broker 2, the group coordinated by broker 3.
fn mock_cluster(
    flow: &Dataflow,
    wiring: &StageWiring,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(3).unwrap();
    for t in topics_of(wiring) {
        mock.create_topic(&t, flow.partitions, 3).unwrap();
    }
    for p in 0..flow.partitions {
        mock.partition_leader(&flow.input_of(wiring.stage), p, Some(1)).unwrap();
        mock.partition_leader(wiring.output.as_deref().unwrap(), p, Some(2))
            .unwrap();
    }
    mock.coordinator(MockCoordinator::Group(wiring.group.clone()), 3)
        .unwrap();
    mock
}

/// Job ids per count on a topic (read whole, after the stages stopped).
fn job_counts(msgs: &[OwnedMessage]) -> BTreeMap<String, usize> {
    let mut c: BTreeMap<String, usize> = BTreeMap::new();
    for m in msgs {
        *c.entry(header(m, "job_id").unwrap().to_string()).or_default() += 1;
    }
    c
}

/// Reads `topic` from the beginning until every job id in `want` was seen.
async fn wait_for_jobs(factory: &KafkaFactory, topic: &str, partitions: i32, want: HashSet<String>, timeout: Duration) {
    let factory = factory.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c = reader_from_beginning(&factory, &topic, partitions);
        let mut seen = HashSet::new();
        let deadline = Instant::now() + timeout;
        while !want.is_subset(&seen) {
            assert!(
                Instant::now() < deadline,
                "{topic}: {} of {} jobs after {timeout:?}",
                want.intersection(&seen).count(),
                want.len()
            );
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                if let Some(j) = get_owned(m.detach().headers(), "job_id") {
                    seen.insert(j.to_string());
                }
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_errors_and_a_broker_going_down_lose_nothing() {
    init_tracing();
    let flow = Dataflow::new("rt4", 3, vec![Duration::from_millis(200)]);
    let wiring = flow.wiring("validate", 64, Duration::from_secs(10));
    // The mock cluster is !Send: it stays in this (block_on) task.
    let mock = mock_cluster(&flow, &wiring);
    let factory = KafkaFactory::new(mock.bootstrap_servers());
    let (input, output, partitions) = (
        flow.input_of("validate"),
        wiring.output.clone().unwrap(),
        flow.partitions,
    );

    // The product's producer: idempotent, acks=all.
    let stage_producer = factory.durable_producer(Duration::from_secs(10)).unwrap();
    assert_eq!(
        effective_config(&stage_producer.current(), "enable.idempotence"),
        "true"
    );
    let acks = effective_config(&stage_producer.current(), "acks");
    assert!(acks == "-1" || acks == "all", "acks={acks}");
    println!("product producer: enable.idempotence=true acks={acks}");

    let stage = Arc::new(ForwardStage::default());
    let mut running = spawn_stage(&factory, wiring.clone(), stage_producer.clone(), stage.clone());

    // 200 records, 10 every 600 ms (~12 s), 40 tickets, while the faults happen.
    const N: usize = 200;
    let input_producer = factory.producer(Duration::from_secs(60)).unwrap();
    let feeder = {
        let input = input.clone();
        let producer = input_producer.clone();
        tokio::spawn(async move {
            let mut delivered = Vec::new();
            for chunk in (0..N).collect::<Vec<_>>().chunks(10) {
                let recs: Vec<Rec> = chunk
                    .iter()
                    .map(|i| Rec::job(&input, &format!("t:{}", i % 40), &format!("job-{i}"), format!("in-{i}")))
                    .collect();
                delivered.extend(produce_all(&producer, &recs).await);
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            delivered
        })
    };

    let t0 = Instant::now();
    let at = |ms: u64| tokio::time::sleep_until((t0 + Duration::from_millis(ms)).into());
    let say = |what: &str| {
        println!(
            "{:>6} ms: {what} (handled {})",
            t0.elapsed().as_millis(),
            stage.distinct()
        )
    };
    let errs = |e: RDKafkaRespErr| [e; 4];
    at(300).await;
    say("4 errors each injected on Produce, Fetch, OffsetCommit");
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &errs(RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION),
    );
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &errs(RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION),
    );
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &errs(RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR),
    );
    // The mock group assigns after its 3 s initial rebalance delay.
    wait_until("first assignment", Duration::from_secs(20), || stage.distinct() > 0).await;
    at(4000).await;
    say("output leader (broker 2) down");
    mock.broker_down(2).unwrap();
    at(7000).await;
    mock.broker_up(2).unwrap();
    say("broker 2 up; input leader (broker 1) down");
    mock.broker_down(1).unwrap();
    at(9000).await;
    mock.broker_up(1).unwrap();
    say("broker 1 up; group coordinator (broker 3) down");
    mock.broker_down(3).unwrap();
    at(11000).await;
    mock.broker_up(3).unwrap();
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &errs(RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT),
    );
    say("broker 3 up; 4 OffsetCommit timeouts injected; restarting the stage");
    running.stop().await;
    say("stage stopped");
    running = spawn_stage(&factory, wiring.clone(), stage_producer.clone(), stage.clone());

    let delivered = feeder.await.unwrap();
    assert_eq!(delivered.len(), N);
    say("all inputs produced");
    wait_until("every input handled", Duration::from_secs(40), || stage.distinct() == N).await;
    running.stop().await;
    say("all handled, stage stopped");

    let inputs = read_topic(&factory, &input, partitions, N).await;
    let outputs = read_topic(&factory, &output, partitions, N).await;
    let (in_count, out_count) = (job_counts(&inputs), job_counts(&outputs));
    let expected: HashSet<String> = (0..N).map(|i| format!("job-{i}")).collect();
    let in_jobs: HashSet<String> = in_count.keys().cloned().collect();
    let out_jobs: HashSet<String> = out_count.keys().cloned().collect();
    let handles = stage.handled.lock().unwrap().len();
    let out_dupes: usize = out_count.values().map(|n| n - 1).sum();
    let in_dupes: usize = in_count.values().map(|n| n - 1).sum();
    println!(
        "broker faults: {N} inputs ({in_dupes} duplicated by the input producer), {handles} stage handles \
         ({} redelivered), {} outputs ({out_dupes} duplicates)",
        handles - N,
        outputs.len()
    );
    assert_eq!(in_jobs, expected, "the input producer lost nothing");
    let missing: Vec<_> = expected.difference(&out_jobs).collect();
    assert!(missing.is_empty(), "inputs without output: {missing:?}");
    assert_eq!(out_jobs, expected, "no output of an unknown job");
    for m in &outputs {
        let job = header(m, "job_id").unwrap();
        let i: usize = job.strip_prefix("job-").unwrap().parse().unwrap();
        assert_eq!(m.payload(), Some(format!("in-{i}").as_bytes()));
        assert_eq!(key_of(m), format!("t:{}", i % 40));
    }
    // Each duplicate output is a redelivery: the stage ran the record again.
    assert!(
        out_dupes <= handles - N + in_dupes,
        "{out_dupes} duplicate outputs but only {} re-handled records",
        handles - N
    );
    drop(mock);
}

/// Shutdown while the output's leader is down: the drain gives up at its
/// bound with records unfinished (their produce failing on a 2 s delivery
/// timeout); the process exits (its runtime shut down with a timeout, as
/// `main` does); a new process of the same group starts and, once the broker
/// is back, every record has its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_during_an_output_outage_loses_nothing_after_restart() {
    outage_shutdown_then_restart(false).await;
}

/// The same, but the new stage starts in the same process while the old
/// stage's worker tasks are still running (in-process restart, or a second
/// process joining during a rolling deploy while this one's drain timed out).
#[test]
fn in_process_restart_after_a_drain_timeout_hands_over_cleanly() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(outage_shutdown_then_restart(true));
    // The old stage's consumer may hang in librdkafka's close on a runtime
    // thread (confluentinc/librdkafka#4041): do not wait for it.
    rt.shutdown_timeout(Duration::from_secs(5));
}

async fn outage_shutdown_then_restart(in_process: bool) {
    init_tracing();
    let prefix = if in_process { "rt5b" } else { "rt5" };
    let flow = Dataflow::new(prefix, 3, vec![Duration::from_millis(200)]);
    let mut wiring = flow.wiring("validate", 64, Duration::from_secs(10));
    wiring.drain_timeout = Duration::from_secs(1);
    let mock = mock_cluster(&flow, &wiring);
    let factory = KafkaFactory::new(mock.bootstrap_servers());
    let (input, output, partitions) = (
        flow.input_of("validate"),
        wiring.output.clone().unwrap(),
        flow.partitions,
    );

    const N: usize = 100;
    let recs: Vec<Rec> = (0..N)
        .map(|i| Rec::job(&input, &format!("t:{}", i % 20), &format!("job-{i}"), format!("in-{i}")))
        .collect();
    produce_all(&factory.producer(Duration::from_secs(30)).unwrap(), &recs).await;

    let t0 = Instant::now();
    mock.broker_down(2).unwrap();
    // Stage A runs in its own "process" (runtime) unless in_process.
    let process_a = (!in_process).then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    let handle_a = process_a
        .as_ref()
        .map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone());
    let stage_a = Arc::new(ForwardStage::default());
    let producer_a = factory.durable_producer(Duration::from_secs(2)).unwrap();
    let a = spawn_stage_on(&handle_a, &factory, wiring.clone(), producer_a, stage_a.clone());
    wait_until("stage A took records", Duration::from_secs(20), || {
        stage_a.distinct() >= 10
    })
    .await;
    println!(
        "{:>6} ms: stage A handled {} (their output cannot be produced); stopping it",
        t0.elapsed().as_millis(),
        stage_a.distinct()
    );
    let stopping = Instant::now();
    a.stop().await;
    let stop_took = stopping.elapsed();
    let a_at_stop = stage_a.handled.lock().unwrap().len();
    println!("stage A's run_stage returned in {stop_took:?} (drain bound 1 s) having started {a_at_stop} records");
    assert!(
        stop_took < Duration::from_secs(8),
        "shutdown exceeded its drain bound: {stop_took:?}"
    );
    if let Some(rt) = process_a {
        // The process exits: main shuts its runtime down with a 5 s bound.
        let exiting = Instant::now();
        tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
        println!("stage A's process exited in {:?}", exiting.elapsed());
    }

    let stage_b = Arc::new(ForwardStage::default());
    let producer_b = factory.durable_producer(Duration::from_secs(10)).unwrap();
    let b_started = Instant::now();
    let b = spawn_stage(&factory, wiring.clone(), producer_b, stage_b.clone());
    tokio::time::sleep_until((t0 + Duration::from_secs(8)).into()).await;
    mock.broker_up(2).unwrap();
    println!("{:>6} ms: broker 2 up", t0.elapsed().as_millis());
    let up = Instant::now();
    let expected: HashSet<String> = (0..N).map(|i| format!("job-{i}")).collect();
    wait_for_jobs(&factory, &output, partitions, expected.clone(), Duration::from_secs(50)).await;
    println!(
        "{:>6} ms: every input has its output, {:?} after the broker came back; stage B handled {} ({:?} after its start)",
        t0.elapsed().as_millis(),
        up.elapsed(),
        stage_b.distinct(),
        b_started.elapsed()
    );
    b.stop().await;
    let outputs = read_topic(&factory, &output, partitions, N).await;
    let counts = job_counts(&outputs);
    let dupes: usize = counts.values().map(|n| n - 1).sum();
    let (a_total, b_total) = (
        stage_a.handled.lock().unwrap().len(),
        stage_b.handled.lock().unwrap().len(),
    );
    println!(
        "outage shutdown: {} outputs for {N} inputs ({dupes} duplicates); stage A handled {a_total} ({} of them \
         started after its run_stage had returned), stage B {b_total}",
        outputs.len(),
        a_total - a_at_stop,
    );
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), expected);
    drop(mock);
}

// ------------------------------------- regressions of runtime bugs found here

/// Sleeps 2 s on every record; logs when each started.
#[derive(Default)]
struct SlowStage {
    started: Mutex<Vec<(String, Instant)>>,
}

#[async_trait]
impl Stage for SlowStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        self.started
            .lock()
            .unwrap()
            .push((input.headers.job_id.clone(), Instant::now()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(StageOutput::Done)
    }
}

/// After the drain bound, `run_stage` returns, but the per-key worker tasks
/// it spawned keep going: the running record finishes and then the key's
/// queued records are started, after shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_record_starts_after_run_stage_returned() {
    let env = start_broker().await;
    let flow = Dataflow::new("rt6", 1, vec![]);
    let mut wiring = flow.wiring("validate", 64, Duration::from_millis(500));
    wiring.drain_timeout = Duration::from_millis(500);
    create_topics(&env.factory, &wiring, 1).await;
    let input = flow.input_of("validate");
    let recs: Vec<Rec> = (0..3)
        .map(|i| Rec::job(&input, "t:slow", &format!("s-{i}"), "x"))
        .collect();
    let producer = env.factory.durable_producer(Duration::from_secs(10)).unwrap();
    produce_all(&producer.current(), &recs).await;
    let stage = Arc::new(SlowStage::default());
    let running = spawn_stage(&env.factory, wiring, producer, stage.clone());
    wait_until("the first record started", Duration::from_secs(30), || {
        !stage.started.lock().unwrap().is_empty()
    })
    .await;
    running.stop().await;
    let returned = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<String> = stage
        .started
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at > returned)
        .map(|(j, _)| j.clone())
        .collect();
    assert!(after.is_empty(), "records started after run_stage returned: {after:?}");
}

/// Retries to one stage, keyed differently; does what `key` says.
#[derive(Default)]
struct TwoTenantStage {
    /// key → (first failure, tier attempt start) in epoch ms.
    times: Mutex<HashMap<String, (i64, i64)>>,
}

#[async_trait]
impl Stage for TwoTenantStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let key = input.key.to_string();
        if input.topic.ends_with(".webhooks") {
            if key.starts_with("limited:") {
                // This tenant's SDP answers 429 Retry-After: 3 s.
                return Err(StageFailure::throttled("429 from SDP", Duration::from_secs(3)));
            }
            // Fails after the throttled one was routed, so it sits behind it in tier 1.
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.times.lock().unwrap().insert(key, (now_ms(), 0));
            return Err(StageFailure::retryable("503 from SDP", None));
        }
        if let Some(t) = self.times.lock().unwrap().get_mut(&key) {
            t.1 = now_ms();
        }
        Ok(StageOutput::Done)
    }
}

/// A record deferred by another tenant's Retry-After is due long after the
/// records behind it in the same retry-tier partition; the tier pauses the
/// partition on the first record, so the others wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_retry_after_does_not_delay_my_retry() {
    let env = start_broker().await;
    let flow = Dataflow::new("rt7", 1, vec![Duration::from_millis(300)]);
    let wiring = flow.wiring("validate", 64, Duration::from_secs(5));
    create_topics(&env.factory, &wiring, 1).await;
    let input = flow.input_of("validate");
    let recs = vec![
        Rec::job(&input, "limited:1", "limited", "x"),
        Rec::job(&input, "other:1", "other", "x"),
    ];
    let producer = env.factory.durable_producer(Duration::from_secs(10)).unwrap();
    produce_all(&producer.current(), &recs).await;
    let stage = Arc::new(TwoTenantStage::default());
    let running = spawn_stage(&env.factory, wiring, producer, stage.clone());
    wait_until("the other tenant's retry ran", Duration::from_secs(30), || {
        stage.times.lock().unwrap().get("other:1").is_some_and(|t| t.1 > 0)
    })
    .await;
    running.stop().await;
    let (failed, retried) = stage.times.lock().unwrap()["other:1"];
    let late = retried - (failed + 300);
    println!("other tenant's retry ran {late} ms after it was due (tier 300 ms, limited tenant's Retry-After 3 s)");
    assert!(late < 1000, "retry held {late} ms behind another tenant's Retry-After");
}

/// Holds every record until the gate opens; counts handles per job.
struct GateStage {
    open: tokio::sync::watch::Receiver<bool>,
    handled: Mutex<HashMap<String, usize>>,
}

#[async_trait]
impl Stage for GateStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let mut rx = self.open.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        *self
            .handled
            .lock()
            .unwrap()
            .entry(input.headers.job_id.clone())
            .or_default() += 1;
        Ok(StageOutput::Done)
    }
}

/// A downstream stall longer than `max.poll.interval.ms` (lowered to 7 s)
/// with the stage at its in-flight bound: the stage pauses its partitions
/// and keeps polling, so the member never leaves the group (one assignment
/// only) and every record is handled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backpressure_longer_than_max_poll_interval_keeps_the_member_in_the_group() {
    let env = start_broker().await;
    let flow = Dataflow::new("rtbp", 2, vec![]);
    let max_in_flight = 4;
    let wiring = flow.wiring("validate", max_in_flight, Duration::from_secs(5));
    create_topics(&env.factory, &wiring, 2).await;
    let input = flow.input_of("validate");
    let recs: Vec<Rec> = (0..40)
        .map(|i| Rec::job(&input, &format!("t:k{i}"), &format!("j{i}"), "x"))
        .collect();
    let producer = env.factory.durable_producer(Duration::from_secs(10)).unwrap();
    produce_all(&producer.current(), &recs).await;

    let (open_tx, open_rx) = tokio::sync::watch::channel(false);
    let stage = Arc::new(GateStage {
        open: open_rx,
        handled: Mutex::new(HashMap::new()),
    });
    let probe = wiring.probe.clone();
    let shutdown = CancellationToken::new();
    let mut cc = env.factory.consumer_config();
    cc.set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "7000");
    let token = shutdown.clone();
    let (w, p, s) = (wiring.clone(), producer.clone(), stage.clone());
    let task = tokio::spawn(async move { run_stage(w, cc, p, s, token).await.expect("run_stage") });

    wait_until("the stage at its bound", Duration::from_secs(30), || {
        probe.paused_for_capacity.load(Ordering::Relaxed)
    })
    .await;
    let assignments_before = probe.assignments();
    // Stalled well past max.poll.interval.ms.
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(
        probe.assignments(),
        assignments_before,
        "the member rebalanced while paused (left the group?)"
    );
    assert!(probe.assigned() > 0, "the member holds its partitions while paused");
    assert!(
        stage.handled.lock().unwrap().is_empty(),
        "nothing finished while the gate was closed"
    );
    open_tx.send(true).unwrap();
    wait_until("40 records handled", Duration::from_secs(60), || {
        stage.handled.lock().unwrap().len() >= 40
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    let handled = stage.handled.lock().unwrap().clone();
    let twice: Vec<_> = handled.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "backpressure: paused for 16 s with max.poll.interval.ms=7000; assignments {}; 40 jobs, handled twice: {}",
        probe.assignments(),
        twice.len()
    );
    assert_eq!(handled.len(), 40);
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert_eq!(probe.assignments(), assignments_before, "no rebalance at all");
}

/// Forwards an output larger than the topics' `max.message.bytes`.
struct InflateStage;

#[async_trait]
impl Stage for InflateStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        if input.value == b"big" {
            Ok(StageOutput::Forward(vec![b'x'; 6 << 20]))
        } else {
            Ok(StageOutput::Forward(input.value.to_vec()))
        }
    }
}

/// A record whose output the broker refuses for good (over
/// `max.message.bytes`) goes to the DLQ with the reason; the records after
/// it flow on (no endless retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_over_the_record_size_limit_goes_to_the_dlq() {
    let env = start_broker().await;
    let flow = Dataflow::new("rtbig", 1, vec![Duration::from_secs(1)]);
    let wiring = flow.wiring("validate", 8, Duration::from_secs(5));
    create_topics(&env.factory, &wiring, 1).await;
    let input = flow.input_of("validate");
    let recs = vec![
        Rec::job(&input, "t:a", "small-1", "a"),
        Rec::job(&input, "t:b", "big-1", "big"),
        Rec::job(&input, "t:c", "small-2", "c"),
    ];
    let producer = env.factory.durable_producer(Duration::from_secs(10)).unwrap();
    produce_all(&producer.current(), &recs).await;
    let running = spawn_stage(&env.factory, wiring.clone(), producer.clone(), Arc::new(InflateStage));
    let dlq = read_topic(&env.factory, &wiring.dlq, 1, 1).await;
    let out = read_topic(&env.factory, wiring.output.as_deref().unwrap(), 1, 2).await;
    running.stop().await;
    assert_eq!(dlq.len(), 1, "exactly one dead letter");
    assert_eq!(header(&dlq[0], "job_id"), Some("big-1"));
    assert_eq!(header(&dlq[0], "error_class"), Some("permanent"));
    let error = header(&dlq[0], "error").unwrap_or_default().to_string();
    assert!(error.contains("refused"), "{error}");
    let jobs: BTreeSet<String> = out
        .iter()
        .filter_map(|m| header(m, "job_id").map(str::to_string))
        .collect();
    assert_eq!(jobs, BTreeSet::from(["small-1".to_string(), "small-2".to_string()]));
}
