//! The `ticketflow` binary as operators run it: SIGTERM mid-stream and a
//! restart lose nothing and duplicate nothing; the tenants CLI works beside
//! a running process.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use serde_json::Value;
use sinks::servicedesk::SdpAuth;
use sinks::sim::{LlmSimulator, SdpSimulator};
use sinks::store::{EmbeddedStore, HistoryStore};

struct Env {
    vars: Vec<(String, String)>,
    http: String,
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

    fn start(&self) -> Child {
        self.command(&["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "ticketflow run did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "ticketflow did not exit within 40 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn send(http: &reqwest::Client, base: &str, secret: &str, i: usize) -> Option<Value> {
    let body = format!(
        r#"{{"event":"request_created","request":{{"id":"{}","subject":"Monitor {i} flickers","priority":"Low"}}}}"#,
        9000 + i
    );
    let id = format!("sigterm-{i}");
    let ts = sinks::now_ms() / 1000;
    let sig = ingest::signature::sign(secret, &id, ts, body.as_bytes()).unwrap();
    let r = http
        .post(format!("{base}/webhooks/servicedesk/acme"))
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .ok()?;
    if r.status().as_u16() == 202 {
        r.json().await.ok()
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_stream_then_restart_enhances_every_accepted_webhook_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let sdp = SdpSimulator::start().await.unwrap();
    sdp.add_portal("acme", SdpAuth::Zoho, "zoho-acme");
    sdp.auto_create_requests(true);
    let llm = LlmSimulator::start().await.unwrap();
    // Slow enough that SIGTERM finds records in flight.
    llm.set_latency(sinks::sim::Latency {
        min: Duration::from_millis(50),
        max: Duration::from_millis(300),
    });
    let http_port = free_port();
    let env = Env {
        vars: vec![
            ("TICKETFLOW_DATA_DIR".into(), dir.path().display().to_string()),
            ("TICKETFLOW_BROKER_ADDR".into(), format!("127.0.0.1:{}", free_port())),
            ("TICKETFLOW_HTTP_ADDR".into(), format!("127.0.0.1:{http_port}")),
            ("TICKETFLOW_OPS_ADDR".into(), "127.0.0.1:0".into()),
            ("TICKETFLOW_PARTITIONS".into(), "3".into()),
            ("TICKETFLOW_RETRY_TIERS".into(), "500ms,1s,2s".into()),
            ("TICKETFLOW_DRAIN_TIMEOUT_MS".into(), "10000".into()),
            ("LLM_BASE_URL".into(), llm.base_url()),
        ],
        http: format!("http://127.0.0.1:{http_port}"),
    };

    // Bad CLI input: one line, non-zero exit.
    let out = env
        .command(&[
            "tenants",
            "add",
            "acme",
            "--servicedesk-url",
            "not a url",
            "--servicedesk-token",
            "t",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: invalid --servicedesk-url") && err.trim().lines().count() == 1,
        "{err}"
    );

    let out = env
        .command(&[
            "tenants",
            "add",
            "acme",
            "--servicedesk-url",
            &sdp.base_url("acme"),
            "--servicedesk-token",
            "zoho-acme",
            "--servicedesk-auth",
            "zoho",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = added["webhook_secret"].as_str().unwrap().to_string();
    assert!(added["api_token"].as_str().unwrap().starts_with("tf_"));

    let http = reqwest::Client::new();
    let mut child = env.start();
    wait_ready(&http, &env.http).await;

    // The tenants CLI works while `run` holds the store.
    let out = env.command(&["tenants", "list", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["tenant_id"], "acme");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&secret),
        "list never prints secrets"
    );

    const N: usize = 120;
    let mut accepted: HashMap<usize, String> = HashMap::new();
    let mut i = 0;
    while i < N {
        if let Some(v) = send(&http, &env.http, &secret, i).await {
            accepted.insert(i, v["job_id"].as_str().unwrap().to_string());
        }
        i += 1;
        if i == 50 {
            break;
        }
    }
    let status = terminate(&mut child);
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    let mut child = env.start();
    wait_ready(&http, &env.http).await;
    for i in 0..N {
        if accepted.contains_key(&i) {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = send(&http, &env.http, &secret, i).await {
                accepted.insert(i, v["job_id"].as_str().unwrap().to_string());
                break;
            }
            assert!(Instant::now() < deadline, "webhook {i} never accepted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let store = EmbeddedStore::open(&dir.path().join("store.db")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = 0;
        for job in accepted.values() {
            if store.history_by_job("acme", job).await.unwrap().is_some() {
                done += 1;
            }
        }
        if done == accepted.len() {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {} jobs recorded", accepted.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let notes = sdp.notes();
    for (i, job) in &accepted {
        let n = notes.iter().filter(|n| n.description.contains(job.as_str())).count();
        assert_eq!(n, 1, "webhook {i} (job {job}) has {n} notes");
    }
    assert_eq!(notes.len(), N, "exactly one note per accepted webhook");
    let status = terminate(&mut child);
    assert!(status.success());
}
