//! `ticketflow dlq retry`, `replay`, `groups reset-offsets` and `topics
//! add-partitions`, driven through the `ticketflow` binary against the
//! embedded broker (and, for what the stages make of re-sent records, the
//! whole pipeline): streaming in windows, progress remembered only for what
//! was re-sent, filters, dry runs, pacing, the two replay modes, and the
//! refusals.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Harness, Tenant};
use processors::headers::{get_owned, new_traceparent, FailureHeaders, JobHeaders};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{Codec, FailureEnvelope, JobMeta, WebhookReceived};
use serde_json::{json, Value};
use sinks::servicedesk::SdpAuth;
use sinks::store::HistoryStatus;
use topology::broker::EmbeddedBroker;
use topology::dataflow::Dataflow;
use topology::kafka::KafkaFactory;
use topology::replay::reader::{self, PartitionReader, ReadRecord};

const ACME: Tenant = Tenant {
    id: "acme",
    auth: SdpAuth::Zoho,
    token: "zoho-acme",
};
const GLOBEX: Tenant = Tenant {
    id: "globex",
    auth: SdpAuth::AuthToken,
    token: "key-globex",
};

const DLQ: &str = "ticketflow.update.dlq";
const RETRY_GROUP: &str = "ticketflow.dlq-retry.update";
/// Where update's dead letters go back to.
const UPDATE_INPUT: &str = "ticketflow.synthesized";
const WEBHOOKS: &str = "ticketflow.webhooks";

fn dataflow() -> Dataflow {
    Dataflow::new(
        "ticketflow",
        3,
        vec![
            Duration::from_millis(200),
            Duration::from_millis(400),
            Duration::from_millis(800),
        ],
    )
}

/// A bare embedded broker with the dataflow's topics (fields drop in order: broker first).
struct Env {
    addr: SocketAddr,
    factory: KafkaFactory,
    producer: FutureProducer,
    _broker: EmbeddedBroker,
    dir: tempfile::TempDir,
}

async fn start_broker() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let broker = EmbeddedBroker::start(addr, dir.path()).await.unwrap();
    let factory = KafkaFactory::new(addr.to_string());
    factory.wait_ready(Duration::from_secs(60)).await.unwrap();
    factory.create_topics(&dataflow().topics()).await.unwrap();
    let producer = factory.producer(Duration::from_secs(30)).unwrap();
    Env {
        addr,
        factory,
        producer,
        _broker: broker,
        dir,
    }
}

/// What a `ticketflow` run printed.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The `--json` lines: (records, summary).
    fn json_lines(&self) -> (Vec<Value>, Value) {
        let mut records = Vec::new();
        let mut summary = Value::Null;
        for l in self.stdout.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            if v.get("summary").is_some() {
                summary = v["summary"].clone();
            } else {
                records.push(v);
            }
        }
        (records, summary)
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// The one-line reason of a failed run.
    fn error(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(lines.len(), 1, "one error line expected: {}", self.stderr);
        lines[0].to_string()
    }
}

/// Runs `ticketflow <args>` against the broker at `addr` (`KAFKA_BROKERS`).
async fn cli(addr: SocketAddr, dir: &std::path::Path, args: &[&str]) -> Out {
    cli_env(dir, args, &[("KAFKA_BROKERS", &addr.to_string())]).await
}

async fn cli_env(dir: &std::path::Path, args: &[&str], vars: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketflow"));
    cmd.args(args)
        .env_clear()
        .env("TICKETFLOW_DATA_DIR", dir.join("cli"))
        .env("TICKETFLOW_RETRY_TIERS", "200ms,400ms,800ms")
        .env("TICKETFLOW_PARTITIONS", "3")
        .env("RUST_LOG", "off");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("ticketflow finished within 180 s")
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A dead letter of the update stage, as the stage runtime writes it.
struct Dead {
    job: String,
    tenant: &'static str,
    ticket: String,
    class: &'static str,
    payload: Vec<u8>,
    timestamp_ms: i64,
}

impl Dead {
    fn new(job: &str, tenant: &'static str, class: &'static str, timestamp_ms: i64) -> Dead {
        Dead {
            job: job.into(),
            tenant,
            ticket: format!("t-{job}"),
            class,
            payload: format!("payload of {job}").into_bytes(),
            timestamp_ms,
        }
    }
}

async fn write_dead(env: &Env, partition: i32, dead: &[Dead]) {
    for d in dead {
        let envelope = FailureEnvelope {
            job_id: d.job.clone(),
            correlation_id: format!("corr-{}", d.job),
            tenant_id: d.tenant.into(),
            ticket_id: d.ticket.clone(),
            failed_stage: "update".into(),
            error: format!("failure of {}", d.job),
            error_class: d.class.into(),
            attempt: 4,
            original_topic: UPDATE_INPUT.into(),
            original_partition: partition,
            original_offset: 0,
            failed_at_ms: d.timestamp_ms,
            not_before_ms: 0,
            payload: d.payload.clone(),
        };
        let headers = FailureHeaders {
            error: &envelope.error,
            error_class: d.class,
            failed_stage: "update",
            original_topic: UPDATE_INPUT,
            original_partition: partition,
            original_offset: 0,
            not_before_ms: None,
        }
        .append_to(job_headers(&d.job, d.tenant).to_kafka());
        let value = Codec::builtin().encode(&envelope).unwrap();
        send(
            env,
            DLQ,
            partition,
            &format!("{}:{}", d.tenant, d.ticket),
            &value,
            headers,
            d.timestamp_ms,
        )
        .await;
    }
}

fn job_headers(job: &str, tenant: &str) -> JobHeaders {
    JobHeaders {
        correlation_id: format!("corr-{job}"),
        tenant_id: tenant.into(),
        job_id: job.into(),
        traceparent: new_traceparent(),
        attempt: 1,
        replayed_from: None,
    }
}

async fn send(env: &Env, topic: &str, partition: i32, key: &str, value: &[u8], headers: OwnedHeaders, ts: i64) {
    env.producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(value)
                .headers(headers)
                .timestamp(ts),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Every record of `topic`, by partition.
async fn read_all(factory: &KafkaFactory, topic: &str) -> BTreeMap<i32, Vec<ReadRecord>> {
    let (factory, topic) = (factory.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c = factory.reader(None).unwrap();
        let mut out = BTreeMap::new();
        for (p, low, high) in reader::watermarks(&c, &topic).unwrap() {
            let mut r = PartitionReader::open(&factory, None, &topic, p, low, high, Duration::from_secs(30)).unwrap();
            let mut recs = Vec::new();
            while !r.at_end() {
                recs.extend(r.next_window(1000).unwrap());
            }
            out.insert(p, recs);
        }
        out
    })
    .await
    .unwrap()
}

fn header(r: &ReadRecord, name: &str) -> Option<String> {
    get_owned(r.headers.as_ref(), name).map(str::to_string)
}

/// Job ids of the records on `topic`.
async fn jobs_on(factory: &KafkaFactory, topic: &str) -> Vec<String> {
    read_all(factory, topic)
        .await
        .into_values()
        .flatten()
        .map(|r| header(&r, "job_id").unwrap_or_default())
        .collect()
}

/// (committed offset, high watermark) of `group` on each partition of `topic`.
async fn positions(factory: &KafkaFactory, group: &str, topic: &str) -> BTreeMap<i32, (Option<i64>, i64)> {
    let (factory, group, topic) = (factory.clone(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c = factory.reader(Some(&group)).unwrap();
        let marks = reader::watermarks(&c, &topic).unwrap();
        let ps: Vec<i32> = marks.iter().map(|m| m.0).collect();
        let done = reader::committed(&c, &topic, &ps).unwrap();
        marks
            .iter()
            .zip(done)
            .map(|(&(p, _, high), d)| (p, (d, high)))
            .collect()
    })
    .await
    .unwrap()
}

fn hour_ago() -> i64 {
    // Whole seconds, so times given to the CLI as epoch ms are exact.
    (sinks::now_ms() - 3_600_000) / 1000 * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dlq_larger_than_one_window_is_retried_completely_and_only_once() {
    let env = start_broker().await;
    let base = hour_ago();
    // 25 dead letters on partition 0 (three windows of 10), 4 on partition 1,
    // and one record that is no failure envelope at all.
    let p0: Vec<Dead> = (0..25)
        .map(|i| Dead::new(&format!("job-a{i}"), "acme", "retryable", base + i * 10))
        .collect();
    let p1: Vec<Dead> = (0..4)
        .map(|i| Dead::new(&format!("job-b{i}"), "globex", "permanent", base + i * 10))
        .collect();
    write_dead(&env, 0, &p0[..12]).await;
    send(&env, DLQ, 0, "x:y", b"not an envelope", OwnedHeaders::new(), base + 125).await;
    write_dead(&env, 0, &p0[12..]).await;
    write_dead(&env, 1, &p1).await;

    let out = cli(
        env.addr,
        env.dir.path(),
        &["dlq", "retry", "update", "--batch", "10", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (lines, summary) = out.json_lines();
    assert_eq!(summary["resent"], 29, "{summary}");
    assert_eq!(summary["skipped_count"], 1, "{summary}");
    assert!(summary["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("unreadable envelope"));
    assert_eq!(lines.iter().filter(|l| l["action"] == "resent").count(), 29);

    // Every dead letter went back to update's input, with its job and as attempt 1.
    let back = read_all(&env.factory, UPDATE_INPUT).await;
    let jobs: HashSet<String> = back.values().flatten().map(|r| header(r, "job_id").unwrap()).collect();
    let want: HashSet<String> = p0.iter().chain(&p1).map(|d| d.job.clone()).collect();
    assert_eq!(jobs, want);
    let one = back
        .values()
        .flatten()
        .find(|r| header(r, "job_id").as_deref() == Some("job-a3"))
        .unwrap();
    assert_eq!(one.value, b"payload of job-a3");
    assert_eq!(header(one, "attempt").as_deref(), Some("1"));
    assert_eq!(one.key.as_deref(), Some("acme:t-job-a3"));
    assert_eq!(
        header(one, "retried_from").as_deref(),
        Some("ticketflow.update.dlq/0@3")
    );

    // The retry group remembers the end of every partition that had records.
    for (p, (committed, high)) in positions(&env.factory, RETRY_GROUP, DLQ).await {
        if high > 0 {
            assert_eq!(committed, Some(high), "partition {p}");
        }
    }

    // A second retry finds nothing new.
    let again = cli(env.addr, env.dir.path(), &["dlq", "retry", "update", "--batch", "10"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stdout
            .contains("re-sent 0 record(s) from the update DLQ; skipped 0"),
        "{}",
        again.stdout
    );
    assert_eq!(jobs_on(&env.factory, UPDATE_INPUT).await.len(), 29);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_resend_stops_and_keeps_the_position_at_that_record() {
    let env = start_broker().await;
    let base = hour_ago();
    let mut dead: Vec<Dead> = (0..11)
        .map(|i| Dead::new(&format!("job-{i}"), "acme", "retryable", base + i))
        .collect();
    // Larger than what the retrying process may produce (below).
    dead[5].payload = vec![b'x'; 100_000];
    write_dead(&env, 0, &dead).await;

    let small = [
        ("KAFKA_BROKERS", env.addr.to_string()),
        ("TICKETFLOW_MAX_BODY_BYTES", "1024".to_string()),
        ("TICKETFLOW_MAX_RECORD_BYTES", "66560".to_string()),
    ];
    let vars: Vec<(&str, &str)> = small.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = cli_env(env.dir.path(), &["dlq", "retry", "update", "--batch", "4"], &vars).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let e = out.error();
    assert!(
        e.contains("re-sending ticketflow.update.dlq/0@5 to ticketflow.synthesized failed"),
        "{e}"
    );
    assert!(e.contains("re-sent 5 record(s) before it"), "{e}");
    // Records before the failure were re-sent and remembered; nothing after it.
    assert_eq!(positions(&env.factory, RETRY_GROUP, DLQ).await[&0], (Some(5), 11));
    assert_eq!(jobs_on(&env.factory, UPDATE_INPUT).await.len(), 5);

    // With a process that may send it, the next retry starts at that record.
    let out = cli(env.addr, env.dir.path(), &["dlq", "retry", "update", "--batch", "4"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("re-sent 6 record(s)"), "{}", out.stdout);
    assert_eq!(positions(&env.factory, RETRY_GROUP, DLQ).await[&0], (Some(11), 11));
    let mut jobs = jobs_on(&env.factory, UPDATE_INPUT).await;
    jobs.sort();
    let mut want: Vec<String> = dead.iter().map(|d| d.job.clone()).collect();
    want.sort();
    assert_eq!(jobs, want, "each dead letter re-sent exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filters_dry_runs_and_time_bounds_of_dlq_retry() {
    let env = start_broker().await;
    let base = hour_ago();
    // One record a second: acme/globex alternate, every third permanent.
    let dead: Vec<Dead> = (0..12)
        .map(|i| {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            let class = if i % 3 == 0 { "permanent" } else { "retryable" };
            Dead::new(&format!("job-{i}"), tenant, class, base + i * 1000)
        })
        .collect();
    write_dead(&env, 0, &dead).await;
    let dir = env.dir.path();

    // A dry run lists every record and sends and remembers nothing.
    let out = cli(env.addr, dir, &["dlq", "retry", "update", "--dry-run"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.matches("would re-send").count(), 12, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("would re-send 0@3  tenant globex ticket t-job-3 job job-3 (permanent): failure of job-3"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("dry run: nothing sent or remembered"));
    assert_eq!(positions(&env.factory, RETRY_GROUP, DLQ).await[&0], (None, 12));
    assert!(jobs_on(&env.factory, UPDATE_INPUT).await.is_empty());

    // --to: stops at the first dead letter written at or after it.
    let to = (base + 4000).to_string();
    let out = cli(env.addr, dir, &["dlq", "retry", "update", "--to", &to, "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, s) = out.json_lines();
    assert_eq!(
        (s["resent"].as_u64(), s["examined"].as_u64()),
        (Some(4), Some(4)),
        "{s}"
    );
    assert_eq!(positions(&env.factory, RETRY_GROUP, DLQ).await[&0], (Some(4), 12));

    // Tenant and error class: only globex's permanent ones (job-9). A
    // filtered retry keeps its progress in a group of its own: the stage's
    // group stays at 4 (the records left out wait for an unfiltered retry),
    // and the same filtered retry again re-sends nothing.
    let out = cli(
        env.addr,
        dir,
        &[
            "dlq",
            "retry",
            "update",
            "--tenant",
            "globex",
            "--error-class",
            "permanent",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("re-sent 1 record(s)"), "{}", out.stdout);
    assert!(out.stdout.contains("re-sent       0@9"), "{}", out.stdout);
    assert!(out.stdout.contains("left out by the filters"), "{}", out.stdout);
    assert_eq!(positions(&env.factory, RETRY_GROUP, DLQ).await[&0], (Some(4), 12));
    let again = cli(
        env.addr,
        dir,
        &[
            "dlq",
            "retry",
            "update",
            "--tenant",
            "globex",
            "--error-class",
            "permanent",
        ],
    )
    .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("re-sent 0 record(s)"), "{}", again.stdout);

    // Ticket, and --from (a time window inside what is left).
    let out = cli(
        env.addr,
        dir,
        &["dlq", "retry", "update", "--ticket", "t-job-6", "--json"],
    )
    .await;
    let (lines, _) = out.json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["job_id"], "job-6");
    let from = (base + 10_000).to_string();
    let out = cli(
        env.addr,
        dir,
        &["dlq", "retry", "update", "--from", &from, "--dry-run", "--json"],
    )
    .await;
    let (lines, s) = out.json_lines();
    let jobs: Vec<&str> = lines.iter().map(|l| l["job_id"].as_str().unwrap()).collect();
    assert_eq!(jobs, ["job-10", "job-11"]);
    assert_eq!(s["excluded"], 6, "{s}");

    // Without filters, everything from the remembered position (again job-6
    // and job-9: one note per job still holds downstream).
    let out = cli(env.addr, dir, &["dlq", "retry", "update"]).await;
    assert!(out.stdout.contains("re-sent 8 record(s)"), "{}", out.stdout);
    assert_eq!(positions(&env.factory, RETRY_GROUP, DLQ).await[&0], (Some(12), 12));
    let jobs = jobs_on(&env.factory, UPDATE_INPUT).await;
    assert_eq!(jobs.len(), 4 + 1 + 1 + 8);
    assert_eq!(jobs.iter().filter(|j| *j == "job-9").count(), 2);

    // One named record, even though it was retried before; nothing remembered.
    let out = cli(
        env.addr,
        dir,
        &["dlq", "retry", "update", "--partition", "0", "--offset", "2"],
    )
    .await;
    assert!(out.stdout.contains("re-sent 1 record(s)"), "{}", out.stdout);
    let out = cli(
        env.addr,
        dir,
        &["dlq", "retry", "update", "--partition", "0", "--offset", "99"],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(
        out.error().contains("no record at ticketflow.update.dlq/0@99"),
        "{}",
        out.stderr
    );

    // Bad input: one line each, exit non-zero, nothing sent.
    for (args, want) in [
        (vec!["dlq", "retry", "nope"], "unknown stage 'nope'"),
        (
            vec!["dlq", "retry", "update", "--batch", "0"],
            "--batch 0 must be from 1",
        ),
        (vec!["dlq", "retry", "update", "--rate", "0"], "--rate 0 must be"),
        (vec!["dlq", "retry", "update", "--from", "soon"], "is not a time"),
        (
            vec!["dlq", "retry", "update", "--error-class", "bogus"],
            "invalid value 'bogus'",
        ),
    ] {
        let out = cli(env.addr, dir, &args).await;
        assert_ne!(out.code, 0, "{args:?}");
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    }
    assert_eq!(jobs_on(&env.factory, UPDATE_INPUT).await.len(), 15);
}

/// Writes webhook records for `(tenant, ticket)`, one a second from `base`, on partition 0.
async fn write_webhooks(env: &Env, base: i64, list: &[(&str, &str)]) -> Vec<String> {
    let mut jobs = Vec::new();
    for (i, (tenant, ticket)) in list.iter().enumerate() {
        let job = format!("job-{i}");
        let w = WebhookReceived {
            meta: JobMeta {
                job_id: job.clone(),
                correlation_id: format!("corr-{job}"),
                tenant_id: tenant.to_string(),
                ticket_id: ticket.to_string(),
                event: "request_created".into(),
                webhook_id: format!("wh-{i}"),
                received_at_ms: base + i as i64 * 1000,
            },
            payload_json: json!({"request": {"id": ticket}}).to_string(),
        };
        let value = Codec::builtin().encode(&w).unwrap();
        let headers = job_headers(&job, tenant).to_kafka();
        send(env, WEBHOOKS, 0, &w.meta.key(), &value, headers, base + i as i64 * 1000).await;
        jobs.push(job);
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_stops_at_to_filters_and_paces() {
    let env = start_broker().await;
    let base = hour_ago();
    let list: Vec<(&str, &str)> = (0..20)
        .map(|i| {
            (
                if i % 2 == 0 { "acme" } else { "globex" },
                if i < 10 { "100" } else { "200" },
            )
        })
        .collect();
    write_webhooks(&env, base, &list).await;
    let dir = env.dir.path();
    let (from, to) = ((base + 2000).to_string(), (base + 12_000).to_string());

    // The mode is required.
    let out = cli(env.addr, dir, &["replay", "--from", &from]).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--mode"), "{}", out.stderr);

    // re-deliver [2 s, 12 s) in windows of 3: exactly records 2..=11, the same
    // jobs and values; nothing after --to.
    let out = cli(
        env.addr,
        dir,
        &[
            "replay",
            "--mode",
            "re-deliver",
            "--from",
            &from,
            "--to",
            &to,
            "--batch",
            "3",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (lines, s) = out.json_lines();
    assert_eq!(s["sent"], 10, "{s}");
    assert_eq!(s["partitions"][0]["start"], 2, "{s}");
    // nisshi answers offset-for-time correctly (checked against the records around it).
    assert_eq!(s["partitions"][0]["start_found_by"], "broker", "{s}");
    assert_eq!(s["partitions"][0]["stopped_at_to_offset"], 12, "{s}");
    let sent: Vec<&str> = lines.iter().map(|l| l["job_id"].as_str().unwrap()).collect();
    let want: Vec<String> = (2..12).map(|i| format!("job-{i}")).collect();
    assert_eq!(sent, want);
    // (The originals were written to partition 0 by hand; the copies go where their keys lead.)
    let originals = read_all(&env.factory, WEBHOOKS).await[&0][..20].to_vec();
    let copies = copies_of(&env.factory, "redelivered_from").await;
    assert_eq!(copies.len(), 10);
    for (orig, again) in originals[2..12].iter().zip(&copies) {
        assert_eq!(orig.value, again.value, "the same record");
        assert_eq!(orig.key, again.key);
        assert_eq!(header(orig, "job_id"), header(again, "job_id"));
        assert_eq!(header(orig, "correlation_id"), header(again, "correlation_id"));
        assert_eq!(
            header(again, "replayed_from"),
            None,
            "validate de-duplicates it as usual"
        );
    }

    // Filters (dry run): acme's ticket 200 in the whole first hour; the
    // re-delivered records, written now, are after --to.
    let out = cli(
        env.addr,
        dir,
        &[
            "replay",
            "--mode",
            "re-enhance",
            "--from",
            &base.to_string(),
            "--to",
            "5m",
            "--tenant",
            "acme",
            "--ticket",
            "200",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("mode re-enhance (dry run: nothing is sent)"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("would send").count(), 5, "{}", out.stdout);
    assert!(
        out.stdout.contains("would send  0@10  acme:200 job job-10"),
        "{}",
        out.stdout
    );
    let total: usize = read_all(&env.factory, WEBHOOKS).await.values().map(Vec::len).sum();
    assert_eq!(total, 30, "a dry run sends nothing");

    // re-enhance of 10 at 5 per second: new jobs, marked as replays; the
    // pace is at most 5/s (a loose lower bound, never an upper one).
    let started = Instant::now();
    let out = cli(
        env.addr,
        dir,
        &[
            "replay",
            "--mode",
            "re-enhance",
            "--from",
            &from,
            "--to",
            &to,
            "--rate",
            "5",
            "--json",
        ],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (lines, s) = out.json_lines();
    assert_eq!(s["sent"], 10, "{s}");
    assert!(took >= Duration::from_secs(1), "10 records at 5/s took {took:?}");
    let new_jobs: HashSet<&str> = lines.iter().map(|l| l["new_job_id"].as_str().unwrap()).collect();
    assert_eq!(new_jobs.len(), 10);
    let copies = copies_of(&env.factory, "replayed_from").await;
    assert_eq!(copies.len(), 10);
    for (orig, new) in originals[2..12].iter().zip(&copies) {
        let job = header(new, "job_id").unwrap();
        assert!(new_jobs.contains(job.as_str()));
        assert_eq!(header(new, "correlation_id"), header(orig, "correlation_id"));
        let w: WebhookReceived = Codec::builtin().decode(&new.value).unwrap();
        assert_eq!(w.meta.job_id, job);
        assert!(w.meta.received_at_ms > base + 3_000_000, "received now");
    }
}

/// The records of the webhooks topic that carry `marker` (a replay header
/// naming the original `topic/partition@offset`), in the originals' order.
async fn copies_of(factory: &KafkaFactory, marker: &str) -> Vec<ReadRecord> {
    let mut copies: Vec<(i64, ReadRecord)> = read_all(factory, WEBHOOKS)
        .await
        .into_values()
        .flatten()
        .filter_map(|r| {
            let from = header(&r, marker)?;
            let offset = from.strip_prefix("ticketflow.webhooks/0@")?.parse().ok()?;
            Some((offset, r))
        })
        .collect();
    copies.sort_by_key(|(o, _)| *o);
    copies.into_iter().map(|(_, r)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn re_deliver_posts_no_second_note_and_re_enhance_posts_a_new_one() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    h.add_tenant(&GLOBEX).await;
    let before = sinks::now_ms() - 1000;
    let (status, first) = h.send("acme", "901", "rp-1", "VPN disconnects every hour").await;
    assert_eq!(status, 202);
    let (_, other) = h
        .send("globex", "901", "rp-2", "Same ticket number, other tenant")
        .await;
    let job = first["job_id"].as_str().unwrap().to_string();
    let other_job = other["job_id"].as_str().unwrap().to_string();
    h.wait_history(
        &[("acme".into(), job.clone()), ("globex".into(), other_job.clone())],
        Duration::from_secs(60),
    )
    .await;
    // A second request_created for the same ticket is a duplicate: skipped.
    let (_, dup) = h.send("acme", "901", "rp-3", "VPN disconnects every hour").await;
    let dup_job = dup["job_id"].as_str().unwrap().to_string();
    let rows = h
        .wait_history(&[("acme".into(), dup_job.clone())], Duration::from_secs(60))
        .await;
    assert_eq!(rows[&dup_job].status, HistoryStatus::Skipped);
    assert_eq!(h.sdp.note_count(), 2);
    let store = h.running().store.clone();
    let original = store.history_by_job("acme", &job).await.unwrap().unwrap();
    let addr = h.config.broker_addr;
    let dir = h.dir.path().to_path_buf();
    let from = before.to_string();

    // re-deliver: both of acme's jobs run again as themselves.
    let redelivered_at = sinks::now_ms();
    let out = cli(
        addr,
        &dir,
        &[
            "replay",
            "--mode",
            "re-deliver",
            "--from",
            &from,
            "--tenant",
            "acme",
            "--ticket",
            "901",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("2 webhook(s) sent as the same jobs"),
        "{}",
        out.stdout
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (again, dup_again) = loop {
        let a = store.history_by_job("acme", &job).await.unwrap().unwrap();
        let d = store.history_by_job("acme", &dup_job).await.unwrap().unwrap();
        if a.completed_at_ms >= redelivered_at && d.completed_at_ms >= redelivered_at {
            break (a, d);
        }
        assert!(Instant::now() < deadline, "re-delivered jobs not recorded again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(again.status, HistoryStatus::Success, "{again:?}");
    assert_eq!(again.note_id, original.note_id, "the note of the first delivery");
    assert_eq!(again.received_at_ms, original.received_at_ms);
    assert_eq!(dup_again.status, HistoryStatus::Skipped, "still a duplicate");
    assert_eq!(h.sdp.note_count(), 2, "no second note");
    assert_eq!(
        store.history_by_ticket("acme", "901").await.unwrap().len(),
        2,
        "no new rows"
    );

    // re-enhance: new jobs, each enhanced again with a new note; globex's
    // ticket with the same number is not touched.
    let out = cli(
        addr,
        &dir,
        &[
            "replay",
            "--mode",
            "re-enhance",
            "--from",
            &from,
            "--to",
            &redelivered_at.to_string(),
            "--tenant",
            "acme",
            "--ticket",
            "901",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (lines, s) = out.json_lines();
    assert_eq!(s["sent"], 2, "{s}");
    let new_jobs: Vec<(String, String)> = lines
        .iter()
        .map(|l| ("acme".to_string(), l["new_job_id"].as_str().unwrap().to_string()))
        .collect();
    let rows = h.wait_history(&new_jobs, Duration::from_secs(60)).await;
    assert!(rows.values().all(|r| r.status == HistoryStatus::Success), "{rows:?}");
    let notes = h.sdp.notes();
    assert_eq!(notes.len(), 4, "each re-enhanced job posts its own note");
    assert_eq!(notes.iter().filter(|n| n.portal == "globex").count(), 1);
    for (_, j) in &new_jobs {
        assert!(notes.iter().any(|n| n.description.contains(j.as_str())));
    }
    // The new rows share the original's correlation id.
    let linked = store
        .history_by_correlation("acme", &original.correlation_id)
        .await
        .unwrap();
    assert_eq!(linked.len(), 2, "{linked:?}");

    // The admin API's retry takes the same filters and dry runs.
    let post = |body: Value| {
        let req = h
            .http
            .post(format!("{}/api/v1/dlq/retry", h.base()))
            .bearer_auth("admin-secret")
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, v) = post(json!({"stage": "update", "tenant": "acme", "dry_run": true})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["dry_run"].as_bool(), v["resent"].as_u64()),
        (Some(true), Some(0)),
        "{v}"
    );
    let (status, _) = post(json!({"stage": "update", "error_class": "bogus"})).await;
    assert_eq!(status, 400);
    let (status, _) =
        post(json!({"stage": "update", "tenant": "acme", "records": [{"partition": 0, "offset": 0}]})).await;
    assert_eq!(status, 400);
    let (status, v) = post(json!({"stage": "update"})).await;
    assert_eq!((status, v["resent"].as_u64()), (200, Some(0)), "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_reset_offsets_plans_applies_and_refuses() {
    let env = start_broker().await;
    let base = hour_ago();
    let dead: Vec<Dead> = (0..10)
        .map(|i| Dead::new(&format!("job-{i}"), "acme", "retryable", base + i * 1000))
        .collect();
    write_dead(&env, 0, &dead).await;
    write_dead(&env, 2, &dead[..3]).await;
    let dir = env.dir.path();
    let reset = |args: &[&str]| {
        let mut all = vec!["groups", "reset-offsets"];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        async move {
            let a: Vec<&str> = all.iter().map(String::as_str).collect();
            cli(env.addr, dir, &a).await
        }
    };

    // Dry run by default: the plan, nothing changed.
    let out = reset(&[RETRY_GROUP, "--to-latest"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("dry run: nothing changed"), "{}", out.stdout);
    assert!(out.stdout.contains(DLQ), "{}", out.stdout);
    assert!(positions(&env.factory, RETRY_GROUP, DLQ)
        .await
        .values()
        .all(|(c, _)| c.is_none()));

    let out = reset(&[RETRY_GROUP, "--to-latest", "--execute", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["executed"], true);
    let now = positions(&env.factory, RETRY_GROUP, DLQ).await;
    assert_eq!((now[&0], now[&2]), ((Some(10), 10), (Some(3), 3)));

    // One partition, by offset, then by time.
    let out = reset(&[RETRY_GROUP, "--to-offset", "2", "--partition", "0", "--execute"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let now = positions(&env.factory, RETRY_GROUP, DLQ).await;
    assert_eq!((now[&0], now[&2]), ((Some(2), 10), (Some(3), 3)));
    let at = (base + 6500).to_string();
    let out = reset(&[RETRY_GROUP, "--to-time", &at, "--partition", "0", "--execute", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["partitions"][0]["new"], 7, "{v}");
    assert_eq!(v["partitions"][0]["lag_after"], 3, "{v}");
    assert_eq!(positions(&env.factory, RETRY_GROUP, DLQ).await[&0], (Some(7), 10));

    // Refusals, each with its reason; nothing changes.
    for (args, want) in [
        (
            vec![RETRY_GROUP, "--to-offset", "99", "--partition", "0", "--execute"],
            "offset 99 is outside ticketflow.update.dlq/0",
        ),
        (
            vec!["ticketflow.updat", "--to-earliest"],
            "unknown group 'ticketflow.updat'",
        ),
        (
            vec!["someone.else", "--to-earliest", "--topic", "nope.topic"],
            "unknown topic 'nope.topic'",
        ),
        (
            vec![RETRY_GROUP, "--to-earliest", "--topic", WEBHOOKS],
            "does not read topic ticketflow.webhooks",
        ),
        (
            vec![RETRY_GROUP, "--to-earliest", "--partition", "7"],
            "has no partition 7",
        ),
        (vec![RETRY_GROUP], "required"),
    ] {
        let out = reset(&args).await;
        assert_ne!(out.code, 0, "{args:?}");
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    }
    assert_eq!(positions(&env.factory, RETRY_GROUP, DLQ).await[&0], (Some(7), 10));

    // A group with an active member is refused, and accepted once it left.
    let member: BaseConsumer = env
        .factory
        .consumer_config()
        .set("group.id", "ticketflow.update")
        .create()
        .unwrap();
    member.subscribe(&[UPDATE_INPUT]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while member.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "the member was never assigned");
        let _ = member.poll(Duration::from_millis(100));
    }
    let out = reset(&["ticketflow.update", "--to-earliest", "--execute"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let e = out.error();
    assert!(e.contains("group ticketflow.update has 1 active member(s)"), "{e}");
    assert!(e.contains("can only be reset while nothing consumes"), "{e}");
    drop(member);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = reset(&["ticketflow.update", "--to-earliest", "--execute"]).await;
        if out.code == 0 {
            assert!(
                out.stdout.contains("offsets of ticketflow.update reset"),
                "{}",
                out.stdout
            );
            break;
        }
        assert!(out.stderr.contains("active member"), "{}", out.stderr);
        assert!(Instant::now() < deadline, "the member never left: {}", out.stderr);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_add_partitions_refuses_what_is_unsafe_or_unsupported() {
    let env = start_broker().await;
    let dir = env.dir.path();
    let add = |args: &'static [&'static str]| {
        let mut all = vec!["topics", "add-partitions"];
        all.extend_from_slice(args);
        async move { cli(env.addr, dir, &all).await }
    };
    for (args, want) in [
        (
            &["ticketflow.webhooks", "--count", "3"][..],
            "has 3 partition(s); --count must be more than that",
        ),
        (
            &["ticketflow.webhooks", "--count", "2"][..],
            "Kafka cannot remove partitions",
        ),
        (&["no.such.topic", "--count", "6"][..], "unknown topic 'no.such.topic'"),
    ] {
        let out = add(args).await;
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.error().contains(want), "{args:?}: {}", out.stderr);
    }

    // Records waiting for validate: adding partitions would reorder tickets.
    write_webhooks(&env, hour_ago(), &[("acme", "1"), ("acme", "1"), ("globex", "2")]).await;
    let out = add(&["ticketflow.webhooks", "--count", "6"]).await;
    assert_eq!(out.code, 1);
    let e = out.error();
    assert!(
        e.contains("unsafe while records wait on ticketflow.webhooks: ticketflow.validate has 3 record(s) left"),
        "{e}"
    );
    assert!(e.contains("--force"), "{e}");

    // Forced, the plan shows; executing it meets a broker without CreatePartitions.
    let out = add(&["ticketflow.webhooks", "--count", "6", "--force"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("ticketflow.webhooks: 3 -> 6 partitions"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("dry run: nothing changed"), "{}", out.stdout);
    let out = add(&["ticketflow.webhooks", "--count", "6", "--force", "--execute"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.error().contains("does not support CreatePartitions"),
        "{}",
        out.stderr
    );

    // Configured for the embedded broker (no KAFKA_BROKERS): refused up front.
    let addr = env.addr.to_string();
    let out = cli_env(
        dir,
        &[
            "topics",
            "add-partitions",
            "ticketflow.webhooks",
            "--count",
            "6",
            "--force",
            "--execute",
        ],
        &[("TICKETFLOW_BROKER_ADDR", addr.as_str())],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.error()
            .contains("the embedded broker (nisshi 0.8.1) does not implement CreatePartitions"),
        "{}",
        out.stderr
    );
    let c = env.factory.reader(None).unwrap();
    assert_eq!(reader::watermarks(&c, WEBHOOKS).unwrap().len(), 3, "still 3 partitions");
}

/// librdkafka's mock cluster answers offset-for-time lookups with -1 (as
/// tansu answered 0): the answer is checked and a search over record
/// timestamps finds the offset instead.
#[test]
fn a_wrong_offset_for_time_answer_falls_back_to_a_search() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("t", 1, 1).unwrap();
    let factory = KafkaFactory::new(mock.bootstrap_servers());
    let producer: BaseProducer = factory.base().create().unwrap();
    let base = hour_ago();
    for i in 0..10 {
        producer
            .send(
                BaseRecord::to("t")
                    .partition(0)
                    .key("k")
                    .payload("v")
                    .timestamp(base + i * 1000),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let c = factory.reader(None).unwrap();
    let (o, by) = reader::offset_at_time(&factory, &c, "t", 0, 0, 10, base + 4500).unwrap();
    assert_eq!((o, by), (5, reader::FoundBy::Search));
    let (o, _) = reader::offset_at_time(&factory, &c, "t", 0, 0, 10, base + 99_000).unwrap();
    assert_eq!(o, 10, "after every record: the end");
    let (o, _) = reader::offset_at_time(&factory, &c, "t", 0, 0, 10, base - 1).unwrap();
    assert_eq!(o, 0);
}

/// The end of a read is an offset: a partition that goes quiet before it is
/// an error, never taken for the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_that_gets_nothing_before_its_end_fails_instead_of_ending() {
    let env = start_broker().await;
    let dead: Vec<Dead> = (0..3)
        .map(|i| Dead::new(&format!("job-{i}"), "acme", "retryable", hour_ago()))
        .collect();
    write_dead(&env, 0, &dead).await;
    let factory = env.factory.clone();
    let (whole, beyond) = tokio::task::spawn_blocking(move || {
        let mut r = PartitionReader::open(&factory, None, DLQ, 0, 0, 3, Duration::from_secs(2)).unwrap();
        let whole = r.next_window(100).map(|w| w.len());
        // As if the partition had held 5 more records when the read began.
        let mut r = PartitionReader::open(&factory, None, DLQ, 0, 0, 8, Duration::from_secs(2)).unwrap();
        (whole, r.next_window(100).map(|w| w.len()))
    })
    .await
    .unwrap();
    assert_eq!(whole, Ok(3), "fewer than asked only at the end");
    let e = beyond.unwrap_err();
    assert!(
        e.contains("nothing could be read from ticketflow.update.dlq/0 at offset 3"),
        "{e}"
    );
}
