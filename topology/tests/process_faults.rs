//! Process faults with the broker in its own process, as a multi-process
//! deployment on one machine runs it (`ticketflow broker` + `ticketflow run`
//! with `KAFKA_BROKERS`): a `kill -9` of the stage process mid-stream, and a
//! second stage process joining and leaving the consumer groups mid-stream.
//! Each ends with every `202`-accepted webhook enhanced by exactly one note.
//!
//! Accounting: webhooks are sent one at a time, each retried (same
//! `webhook-id`) while the connection is refused or ingest answers 503, so
//! every webhook ends accepted except the (at most one) request in flight
//! when the ingest process was killed. Its fate is unknown to the sender —
//! the broker may have acknowledged it before the response was lost — so its
//! ticket may carry at most one note and is otherwise not counted.
//!
//! Both `run` processes of the second test open the same embedded store file
//! (libSQL, WAL, busy timeout): SQLite's locking makes that safe on one host.
//!
//! Each process writes its logs to `<tempdir>/<name>.log`; a failed test keeps
//! the temp dir and prints its path and the last lines of every log.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::free_port;
use serde_json::Value;
use sinks::servicedesk::SdpAuth;
use sinks::sim::{Latency, LlmSimulator, RecordedNote, SdpSimulator};
use sinks::store::{EmbeddedStore, HistoryStatus, HistoryStore};

const TENANT: &str = "acme";
/// Ticket of webhook `i` is `TICKET_BASE + i`.
const TICKET_BASE: usize = 9000;
/// Most webhooks one test sends, whatever happens.
const MAX_WEBHOOKS: usize = 300;
/// Webhooks sent after the fault phase ends.
const TAIL: usize = 30;
/// Pause between webhooks.
const PACE: Duration = Duration::from_millis(30);

struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ticketflow"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Runs a short command to completion; panics with its stderr on failure.
    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "ticketflow {args:?}: {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running command with its logs (stderr) in `log`.
    fn spawn(&self, name: &str, args: &[&str], log: PathBuf) -> Proc {
        let file = File::create(&log).unwrap();
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }
}

/// A `ticketflow` child process. Dropped while still running (a failed
/// test), it is killed; dropped during a panic, it prints its last log lines.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics if the process has exited already.
    fn assert_alive(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{} exited early: {status:?}", self.name);
        }
    }

    /// SIGKILL, and wait for the exit.
    fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap()
    }

    /// SIGTERM, and wait (bounded) for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within 40 s of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("---- last log lines of {} ----\n{}", self.name, tail.join("\n"));
        }
    }
}

/// The broker in its own process, topics, a tenant, the simulators.
struct Cluster {
    /// Kept (not deleted) when the test fails, for its logs.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    sdp: SdpSimulator,
    _llm: LlmSimulator,
    /// Environment of `ticketflow run` and the CLI (`KAFKA_BROKERS` set).
    app: Env,
    base: String,
    secret: String,
}

impl Cluster {
    async fn start() -> (Cluster, Proc) {
        let dir = tempfile::Builder::new().prefix("tf-process-faults-").tempdir().unwrap();
        let sdp = SdpSimulator::start().await.unwrap();
        sdp.add_portal(TENANT, SdpAuth::Zoho, "zoho-acme");
        sdp.auto_create_requests(true);
        let llm = LlmSimulator::start().await.unwrap();
        // Slow enough that the faults find jobs in flight at synthesize.
        llm.set_latency(Latency::fixed(Duration::from_millis(200)));

        let broker_addr = format!("127.0.0.1:{}", free_port());
        let broker_env = Env {
            vars: vec![
                (
                    "TICKETFLOW_DATA_DIR".into(),
                    dir.path().join("broker").display().to_string(),
                ),
                ("TICKETFLOW_BROKER_ADDR".into(), broker_addr.clone()),
                ("TICKETFLOW_PARTITIONS".into(), "3".into()),
                // The group coordinator's own account of joins, syncs and expiries.
                (
                    "RUST_LOG".into(),
                    "warn,topology=info,nisshi_broker::coordinator=info".into(),
                ),
            ],
        };
        let broker = broker_env.spawn("broker", &["broker"], dir.path().join("broker.log"));

        let http_port = free_port();
        let app = Env {
            vars: vec![
                ("KAFKA_BROKERS".into(), broker_addr),
                (
                    "TICKETFLOW_DATA_DIR".into(),
                    dir.path().join("app").display().to_string(),
                ),
                ("TICKETFLOW_HTTP_ADDR".into(), format!("127.0.0.1:{http_port}")),
                ("TICKETFLOW_OPS_ADDR".into(), "127.0.0.1:0".into()),
                ("TICKETFLOW_PARTITIONS".into(), "3".into()),
                ("TICKETFLOW_RETRY_TIERS".into(), "200ms,400ms,800ms".into()),
                ("TICKETFLOW_DRAIN_TIMEOUT_MS".into(), "10000".into()),
                ("LLM_BASE_URL".into(), llm.base_url()),
                ("LLM_API_KEY".into(), "sk-test".into()),
            ],
        };
        // Waits (10 s) for the broker; idempotent beside the topics the broker made.
        let out = app.run_ok(&["topics", "create"]);
        assert!(out.contains("topics:"), "{out}");
        let out = app.run_ok(&[
            "tenants",
            "add",
            TENANT,
            "--servicedesk-url",
            &sdp.base_url(TENANT),
            "--servicedesk-token",
            "zoho-acme",
            "--servicedesk-auth",
            "zoho",
            "--requests-per-minute",
            "60000",
            "--json",
        ]);
        let added: Value = serde_json::from_str(&out).unwrap();
        let secret = added["webhook_secret"].as_str().unwrap().to_string();
        let cluster = Cluster {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            sdp,
            _llm: llm,
            app,
            base: format!("http://127.0.0.1:{http_port}"),
            secret,
        };
        (cluster, broker)
    }

    fn run(&self, name: &str, args: &[&str]) -> Proc {
        self.app.spawn(name, args, self.path.join(format!("{name}.log")))
    }

    async fn store(&self) -> EmbeddedStore {
        EmbeddedStore::open(&self.path.join("app").join("store.db"))
            .await
            .unwrap()
    }

    /// Total consumer lag of every stage group, and the partitions that
    /// lag, from `ticketflow lag --json`.
    fn lag(&self) -> Option<(i64, Vec<Value>)> {
        let out = self.app.command(&["lag", "--json"]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let mut total = 0;
        let mut lagging = Vec::new();
        for g in v["groups"].as_array()? {
            total += g["total_lag"].as_i64()?;
            for p in g["partitions"].as_array()? {
                if p["lag"].as_i64().unwrap_or(0) > 0 {
                    lagging.push(serde_json::json!({"group": g["group"], "partition": p}));
                }
            }
        }
        Some((total, lagging))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("logs (*.log) and data kept in {}", dir.keep().display());
            }
        }
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        proc.assert_alive();
        assert!(Instant::now() < deadline, "{} did not become ready", proc.name);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one attempt at sending a webhook came to.
enum Sent {
    Accepted(String),
    /// Nothing reached ingest: the connection was refused.
    Refused,
    Status(u16, String),
    /// The request may have reached ingest; no answer came back.
    Lost(String),
}

async fn send(http: &reqwest::Client, base: &str, secret: &str, i: usize) -> Sent {
    let body = format!(
        r#"{{"event":"request_created","request":{{"id":"{}","subject":"Laptop {i} will not dock","priority":"Medium"}}}}"#,
        TICKET_BASE + i
    );
    let id = format!("fault-{i}");
    let ts = sinks::now_ms() / 1000;
    let sig = ingest::signature::sign(secret, &id, ts, body.as_bytes()).unwrap();
    let r = http
        .post(format!("{base}/webhooks/servicedesk/{TENANT}"))
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Sent::Refused,
        Err(e) => return Sent::Lost(e.to_string()),
    };
    let status = r.status().as_u16();
    let text = match r.text().await {
        Ok(t) => t,
        Err(e) => return Sent::Lost(e.to_string()),
    };
    if status == 202 {
        let v: Value = serde_json::from_str(&text).unwrap();
        Sent::Accepted(v["job_id"].as_str().unwrap().to_string())
    } else {
        Sent::Status(status, text)
    }
}

#[derive(Default, Debug)]
struct Ledger {
    /// Webhook index -> job id of its 202.
    accepted: BTreeMap<usize, String>,
    /// In flight when ingest died: fate unknown to the sender.
    ambiguous: BTreeSet<usize>,
    /// Attempts refused (connection refused) or answered 503, then retried.
    retried: usize,
    /// Anything else: a test failure.
    unexpected: Vec<String>,
    /// Webhooks sent in all.
    sent: usize,
    done: bool,
}

/// Sends webhooks one after another until `finish` is set and `TAIL` more
/// went out (bounded by `MAX_WEBHOOKS` and 150 s).
async fn sender(base: String, secret: String, ledger: Arc<Mutex<Ledger>>, finish: Arc<AtomicBool>) {
    // No pooled connections: after a kill, a request is either refused or was
    // really in flight.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut tail = None;
    for i in 0..MAX_WEBHOOKS {
        if tail.is_none() && finish.load(Ordering::SeqCst) {
            tail = Some(i + TAIL);
        }
        if tail == Some(i) || Instant::now() > deadline {
            break;
        }
        loop {
            let sent = send(&http, &base, &secret, i).await;
            // true: send this webhook again.
            let again = {
                let mut l = ledger.lock().unwrap();
                match sent {
                    Sent::Accepted(job) => {
                        l.accepted.insert(i, job);
                        false
                    }
                    Sent::Refused | Sent::Status(503, _) if Instant::now() < deadline => {
                        // Nothing was written (or the claim was released): the
                        // same webhook-id again is safe.
                        l.retried += 1;
                        true
                    }
                    Sent::Lost(e) => {
                        eprintln!("webhook {i}: no answer ({e}); its fate is unknown");
                        l.ambiguous.insert(i);
                        false
                    }
                    Sent::Status(409, _) => {
                        // A claim left pending by a killed writer.
                        l.ambiguous.insert(i);
                        false
                    }
                    Sent::Refused => {
                        l.unexpected.push(format!("webhook {i}: refused until the deadline"));
                        false
                    }
                    Sent::Status(s, body) => {
                        l.unexpected.push(format!("webhook {i}: {s} {body}"));
                        false
                    }
                }
            };
            if !again {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ledger.lock().unwrap().sent = i + 1;
        tokio::time::sleep(PACE).await;
    }
    ledger.lock().unwrap().done = true;
}

async fn wait_accepted(ledger: &Mutex<Ledger>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger.lock().unwrap().accepted.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} webhooks accepted",
            ledger.lock().unwrap().accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The job id in a note's marker (`Ticketflow job <job_id>`).
fn job_of(note: &RecordedNote) -> String {
    let (_, rest) = note
        .description
        .split_once("Ticketflow job ")
        .unwrap_or_else(|| panic!("note {} has no job marker: {}", note.note_id, note.description));
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// Waits until every accepted job has its history row and every stage group
/// committed everything (so a webhook of unknown fate is finished too), then
/// checks: one note per accepted job, on its ticket; no job or ticket with two
/// notes; no note but for an accepted webhook or one of unknown fate.
async fn settle_and_check(c: &Cluster, ledger: &Ledger) {
    assert!(ledger.unexpected.is_empty(), "{:?}", ledger.unexpected);
    let store = c.store().await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    loop {
        let mut missing = Vec::new();
        for (i, job) in &ledger.accepted {
            if store.history_by_job(TENANT, job).await.unwrap().is_none() {
                missing.push(*i);
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted jobs have no history row: webhooks {missing:?}",
            missing.len(),
            ledger.accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag = c.lag();
        if matches!(lag, Some((0, _))) {
            break;
        }
        assert!(Instant::now() < deadline, "consumer lag stays at {lag:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "settled {:.1} s after the last webhook",
        started.elapsed().as_secs_f64()
    );

    let notes = c.sdp.notes();
    let mut by_job: HashMap<String, Vec<&RecordedNote>> = HashMap::new();
    let mut by_ticket: HashMap<&str, usize> = HashMap::new();
    for n in &notes {
        by_job.entry(job_of(n)).or_default().push(n);
        *by_ticket.entry(n.request_id.as_str()).or_default() += 1;
    }
    for (job, ns) in &by_job {
        assert_eq!(ns.len(), 1, "job {job} has {} notes", ns.len());
    }
    for (ticket, n) in &by_ticket {
        assert_eq!(*n, 1, "ticket {ticket} has {n} notes");
    }
    let mut jobs = BTreeSet::new();
    for (i, job) in &ledger.accepted {
        assert!(jobs.insert(job), "job {job} accepted twice");
        let ns = by_job.get(job).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(ns.len(), 1, "webhook {i} (job {job}) has {} notes", ns.len());
        assert_eq!(
            ns[0].request_id,
            (TICKET_BASE + i).to_string(),
            "job {job}'s note is on another ticket"
        );
        let row = store.history_by_job(TENANT, job).await.unwrap().unwrap();
        assert_eq!(row.status, HistoryStatus::Success, "webhook {i}: {row:?}");
        assert_eq!(row.note_id.as_deref(), Some(ns[0].note_id.as_str()), "webhook {i}");
    }
    let extra: Vec<&RecordedNote> = notes.iter().filter(|n| !jobs.contains(&job_of(n))).collect();
    for n in &extra {
        let i: usize = n.request_id.parse::<usize>().unwrap() - TICKET_BASE;
        assert!(
            ledger.ambiguous.contains(&i),
            "note {} (job {}) on ticket {} belongs to no webhook sent",
            n.note_id,
            job_of(n),
            n.request_id
        );
    }
    assert_eq!(
        notes.len(),
        ledger.accepted.len() + extra.len(),
        "exactly one note per accepted webhook"
    );
    eprintln!(
        "{} webhooks sent, {} accepted ({} attempts retried), {} of unknown fate ({} of them enhanced): {} notes",
        ledger.sent,
        ledger.accepted.len(),
        ledger.retried,
        ledger.ambiguous.len(),
        extra.len(),
        notes.len()
    );
}

fn count(logs: &str, message: &str) -> usize {
    let needle = format!("\"message\":\"{message}\"");
    logs.lines().filter(|l| l.contains(&needle)).count()
}

/// A drain cut short by its bound leaves records to be redone while the
/// first run of them may still be going on: not expected here.
fn assert_no_drain_timeout(logs: &str, who: &str) {
    for message in [
        "revoke drain timed out; unfinished records will be redone by the next owner",
        "drain timed out; unfinished records will be redone after restart",
    ] {
        assert_eq!(count(logs, message), 0, "{who}: {message}");
    }
}

/// Stages that logged partitions assigned to them (more than zero).
fn stages_assigned(logs: &str) -> BTreeSet<String> {
    logs.lines()
        .filter(|l| l.contains("\"partitions assigned\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["partitions"].as_u64().unwrap_or(0) > 0)
        .filter_map(|v| v["fields"]["stage"].as_str().map(String::from))
        .collect()
}

/// Waits until every stage of `proc` logged a non-empty partition assignment.
fn wait_assigned(proc: &mut Proc, within: Duration) {
    let stages = ["validate", "context", "synthesize", "update", "record"];
    let deadline = Instant::now() + within;
    loop {
        proc.assert_alive();
        let assigned = stages_assigned(&proc.logs());
        if stages.iter().all(|s| assigned.contains(*s)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: only {assigned:?} of the stage consumer groups assigned it partitions within {within:?}",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Consumers' `session.timeout.ms` (topology/src/kafka.rs).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// kill -9 of `run` mid-stream, a new `run` `restart_after` later, webhooks
/// flowing all along; then the exactly-once accounting.
async fn kill_9_then_restart(restart_after: Duration) {
    let t0 = Instant::now();
    let (c, mut broker) = Cluster::start().await;
    let http = reqwest::Client::new();
    let mut run1 = c.run("run-1", &["run"]);
    wait_ready(&http, &c.base, &mut run1).await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let finish = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn(sender(c.base.clone(), c.secret.clone(), ledger.clone(), finish.clone()));

    wait_accepted(&ledger, 50).await;
    let status = run1.kill9();
    let killed = Instant::now();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let accepted_at_kill = ledger.lock().unwrap().accepted.len();
    let notes_at_kill = c.sdp.note_count();
    eprintln!("kill -9 with {accepted_at_kill} accepted, {notes_at_kill} notes posted");
    assert!(
        notes_at_kill < accepted_at_kill,
        "the kill found no job in flight ({notes_at_kill} notes for {accepted_at_kill} accepted)"
    );

    // The sender meets a dead ingest meanwhile (connection refused, retried).
    tokio::time::sleep(restart_after).await;
    let mut run2 = c.run("run-2", &["run"]);
    wait_ready(&http, &c.base, &mut run2).await;
    eprintln!(
        "restarted, ingest ready {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    tokio::task::block_in_place(|| wait_assigned(&mut run2, Duration::from_secs(40)));
    eprintln!(
        "every stage consuming {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    wait_accepted(&ledger, accepted_at_kill + 30).await;
    finish.store(true, Ordering::SeqCst);
    sending.await.unwrap();
    let ledger = Arc::try_unwrap(ledger).unwrap().into_inner().unwrap();
    assert!(ledger.done);
    assert!(ledger.ambiguous.len() <= 1, "{ledger:?}");
    assert!(ledger.retried > 0, "no webhook met the dead ingest");

    settle_and_check(&c, &ledger).await;
    eprintln!(
        "after the restart, {} note(s) were found already posted by the killed process",
        count(&run2.logs(), "note already on the ticket from an earlier attempt")
    );

    let status = run2.terminate();
    assert!(status.success(), "run-2 after SIGTERM: {status:?}");
    let status = broker.terminate();
    assert!(status.success(), "broker after SIGTERM: {status:?}");
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

/// The new process starts once the killed one's consumer-group members have
/// expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_stage_process_with_the_broker_in_its_own_process_loses_and_duplicates_nothing() {
    kill_9_then_restart(SESSION_TIMEOUT + Duration::from_secs(1)).await;
}

/// Restarted at once, as Kubernetes does: the new process's members join
/// while the killed process's members are still within their session
/// timeout; the coordinator must expire them and hand every partition to the
/// new members. (tansu 0.6.0 formed the group with an empty assignment here
/// and the stages consumed nothing, ever; nisshi 0.8.1 does not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_then_immediate_restart_with_the_broker_in_its_own_process_resumes_every_stage() {
    kill_9_then_restart(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_stage_process_joining_and_leaving_mid_stream_loses_and_duplicates_nothing() {
    let t0 = Instant::now();
    let (c, mut broker) = Cluster::start().await;
    let http = reqwest::Client::new();
    let mut a = c.run("run-a", &["run"]);
    wait_ready(&http, &c.base, &mut a).await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let finish = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn(sender(c.base.clone(), c.secret.clone(), ledger.clone(), finish.clone()));
    wait_accepted(&ledger, 30).await;

    // B: every stage, no ingest (its ops endpoints on a port of its own, so
    // the same environment, TICKETFLOW_HTTP_ADDR included, works beside A).
    // Same store file.
    let mut b = c.run(
        "run-b",
        &["run", "--stages", "validate,context,synthesize,update,record"],
    );
    let b_started = Instant::now();
    let stages = ["validate", "context", "synthesize", "update", "record"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        b.assert_alive();
        a.assert_alive();
        let logs = b.logs();
        let assigned = stages_assigned(&logs);
        if stages.iter().all(|s| assigned.contains(*s)) && count(&logs, "note posted") >= 3 {
            break;
        }
        assert!(!ledger.lock().unwrap().done, "the sender finished before B took part");
        assert!(
            Instant::now() < deadline,
            "B did not share the work: partitions of {assigned:?}, {} notes",
            count(&logs, "note posted")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let joined = Instant::now();
    eprintln!(
        "B shares every stage {:.1} s after its start ({} accepted so far)",
        b_started.elapsed().as_secs_f64(),
        ledger.lock().unwrap().accepted.len()
    );
    // Let B work a while with traffic flowing, then stop it mid-stream.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = b.terminate();
    assert!(status.success(), "B after SIGTERM: {status:?}");
    let b_logs = b.logs();
    let b_notes = count(&b_logs, "note posted");
    eprintln!(
        "B stopped after {:.1} s of sharing, having posted {b_notes} notes",
        joined.elapsed().as_secs_f64()
    );
    assert_no_drain_timeout(&b_logs, "B");

    // A takes B's partitions back and goes on.
    let after_b = ledger.lock().unwrap().accepted.len();
    wait_accepted(&ledger, after_b + 10).await;
    finish.store(true, Ordering::SeqCst);
    sending.await.unwrap();
    let ledger = Arc::try_unwrap(ledger).unwrap().into_inner().unwrap();
    assert!(ledger.done);
    assert!(ledger.ambiguous.is_empty(), "{ledger:?}");
    assert_eq!(ledger.accepted.len(), ledger.sent, "{ledger:?}");

    settle_and_check(&c, &ledger).await;
    let a_logs = a.logs();
    assert_no_drain_timeout(&a_logs, "A");
    let a_notes = count(&a_logs, "note posted");
    assert_eq!(a_notes + b_notes, ledger.accepted.len(), "notes posted by A and B");

    let status = a.terminate();
    assert!(status.success(), "A after SIGTERM: {status:?}");
    let status = broker.terminate();
    assert!(status.success(), "broker after SIGTERM: {status:?}");
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

/// Issue 10's acceptance: two `ticketflow run` processes on one host share
/// one data dir (one store file), each running every stage, while 2,000
/// webhooks arrive: exactly 2,000 notes, one per webhook, and both
/// processes did part of the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_run_processes_sharing_one_data_dir_post_exactly_one_note_per_webhook() {
    const N: usize = 2_000;
    let t0 = Instant::now();
    let (c, mut broker) = Cluster::start().await;
    let http = reqwest::Client::new();
    let mut a = c.run("run-a", &["run"]);
    wait_ready(&http, &c.base, &mut a).await;
    // B: every stage, no ingest, the same environment and so the same store file.
    let mut b = c.run(
        "run-b",
        &["run", "--stages", "validate,context,synthesize,update,record"],
    );
    wait_assigned(&mut b, Duration::from_secs(60));

    // 2,000 webhooks, 16 at a time; a 503 (claim released) is sent again.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut sending = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..16 {
        let (base, secret, ledger, next) = (c.base.clone(), c.secret.clone(), ledger.clone(), next.clone());
        sending.spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= N || Instant::now() > deadline {
                    return;
                }
                loop {
                    match send(&http, &base, &secret, i).await {
                        Sent::Accepted(job) => {
                            ledger.lock().unwrap().accepted.insert(i, job);
                            break;
                        }
                        Sent::Status(503, _) if Instant::now() < deadline => {
                            ledger.lock().unwrap().retried += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Sent::Lost(e) => {
                            ledger
                                .lock()
                                .unwrap()
                                .unexpected
                                .push(format!("webhook {i}: no answer: {e}"));
                            break;
                        }
                        Sent::Refused => {
                            ledger.lock().unwrap().unexpected.push(format!("webhook {i}: refused"));
                            break;
                        }
                        Sent::Status(s, body) => {
                            ledger
                                .lock()
                                .unwrap()
                                .unexpected
                                .push(format!("webhook {i}: {s} {body}"));
                            break;
                        }
                    }
                }
            }
        });
    }
    while let Some(r) = sending.join_next().await {
        r.unwrap();
    }
    let mut ledger = Arc::try_unwrap(ledger).unwrap().into_inner().unwrap();
    ledger.sent = N;
    ledger.done = true;
    assert_eq!(
        ledger.accepted.len(),
        N,
        "every webhook accepted: {:?}",
        ledger.unexpected
    );

    settle_and_check(&c, &ledger).await;
    assert_eq!(c.sdp.notes().len(), N, "exactly one note per webhook");
    let (a_notes, b_notes) = (count(&a.logs(), "note posted"), count(&b.logs(), "note posted"));
    eprintln!("A posted {a_notes} notes, B {b_notes}");
    assert_eq!(a_notes + b_notes, N);
    assert!(
        a_notes > 0 && b_notes > 0,
        "both processes shared the work (A {a_notes}, B {b_notes})"
    );

    for (p, who) in [(&mut b, "B"), (&mut a, "A"), (&mut broker, "broker")] {
        let status = p.terminate();
        assert!(status.success(), "{who} after SIGTERM: {status:?}");
    }
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}
