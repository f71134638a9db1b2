//! Lag with a verdict, end to end on the embedded broker: a group whose
//! consumers are gone while webhooks keep arriving shows STOP, one whose
//! member reads without committing shows STALL — in `ticketflow lag --json`,
//! in `/api/v1/lag` and on the dashboard; the backlog per tenant counts the
//! webhooks sent; a stage-only process serves health, metrics and lag on
//! its ops address; the dashboard renders in headless Chromium behind the
//! viewer token (screenshot kept under target/).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Harness, Tenant};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value;
use sinks::servicedesk::SdpAuth;

/// The lag gauges are process-wide and each test's monitor resets them:
/// tests of this file run one at a time so each reads its own.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LAG_VARS: &[(&str, &str)] = &[
    ("TICKETFLOW_LAG_INTERVAL", "500ms"),
    ("TICKETFLOW_LAG_WINDOW", "3s"),
    ("TICKETFLOW_VIEWER_TOKEN", "viewer-secret"),
];

fn tenant(id: &'static str) -> Tenant {
    Tenant {
        id,
        auth: SdpAuth::AuthToken,
        token: "sdp-token",
    }
}

/// `ticketflow lag --json` against the harness's broker.
fn lag_cli(h: &Harness, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ticketflow"))
        .arg("lag")
        .args(args)
        .env("KAFKA_BROKERS", &h.running().bootstrap)
        .env("TICKETFLOW_PARTITIONS", "3")
        .env("TICKETFLOW_DATA_DIR", h.dir.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("ticketflow lag runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn group<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == name))
        .unwrap_or_else(|| panic!("no group {name} in {report}"))
}

async fn api_lag(h: &Harness, base: &str, token: &str) -> (u16, Value) {
    let r = h
        .http
        .get(format!("{base}/api/v1/lag"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `/api/v1/lag` shows `status` for `group` (the monitor needs
/// a full window of samples).
async fn wait_status(h: &Harness, base: &str, name: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (code, v) = api_lag(h, base, "viewer-secret").await;
        assert_eq!(code, 200, "{v}");
        let seen = v["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["group"] == name))
            .cloned();
        if seen.as_ref().is_some_and(|g| g["status"] == status) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} never showed {status}: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_without_consumers_while_webhooks_arrive_is_stop_with_backlog_per_tenant() {
    let _serial = SERIAL.lock().await;
    let mut h = Harness::start(LAG_VARS).await;
    h.add_tenant(&tenant("acme")).await;
    h.add_tenant(&tenant("globex")).await;
    // Only ingest runs: nobody consumes the validate group's input.
    h.restart(&["ingest"]).await;
    for i in 0..7 {
        let (s, v) = h.send("acme", &format!("A-{i}"), &format!("wh-a-{i}"), "printer").await;
        assert_eq!(s, 202, "{v}");
    }
    for i in 0..4 {
        let (s, v) = h.send("globex", &format!("G-{i}"), &format!("wh-g-{i}"), "vpn").await;
        assert_eq!(s, 202, "{v}");
    }
    let base = h.base();
    let v = wait_status(&h, &base, "ticketflow.validate", "STOP").await;
    let g = group(&v, "ticketflow.validate");
    assert_eq!(g["total_lag"], 11, "{g}");
    assert_eq!(g["members"], 0, "{g}");
    assert!(g["reason"].as_str().unwrap().contains("no member"), "{g}");
    assert_eq!(g["eta_seconds"], Value::Null, "not draining: {g}");
    // Backlog per tenant from the record keys, largest first.
    let tenants = g["tenants"].as_array().unwrap();
    assert_eq!(tenants[0]["tenant"], "acme", "{g}");
    assert_eq!(tenants[0]["backlog"], 7, "{g}");
    assert_eq!(tenants[1]["tenant"], "globex", "{g}");
    assert_eq!(tenants[1]["backlog"], 4, "{g}");
    assert!(g["seconds_behind"].as_f64().unwrap() >= 0.0, "{g}");
    // Groups with nothing to do are OK.
    assert_eq!(group(&v, "ticketflow.record")["status"], "OK", "{v}");

    // The same verdict from the command line, which samples by itself.
    let (code, out, err) = lag_cli(&h, &["--json", "--window", "2s", "--interval", "500ms"]);
    assert_eq!(code, 0, "{err}");
    let cli: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let g = group(&cli, "ticketflow.validate");
    assert_eq!(g["status"], "STOP", "{g}");
    assert_eq!(g["total_lag"], 11, "{g}");
    let (code, out, _) = lag_cli(&h, &["--window", "2s", "--interval", "500ms", "--stages", "validate"]);
    assert_eq!(code, 0);
    assert!(out.contains("STOP") && out.contains("acme 7"), "{out}");
    // Bad input: one line, non-zero.
    let (code, _, err) = lag_cli(&h, &["--window", "1s", "--interval", "1s"]);
    assert_ne!(code, 0);
    assert!(err.contains("at least two --intervals"), "{err}");
    let (code, _, err) = lag_cli(&h, &["--stages", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown stage 'nope'"), "{err}");

    // Gauges.
    let metrics = h
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ticketflow_consumer_group_status{group="ticketflow.validate",status="STOP"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ticketflow_tenant_backlog{group="ticketflow.validate",tenant="acme"} 7"#),
        "{metrics}"
    );
    assert!(metrics.contains("process_resident_memory_bytes"), "process metrics");
    assert!(metrics.contains("process_open_fds"), "process metrics");

    // The dashboard: behind the admin or viewer token.
    let dash = |token: Option<&str>| {
        let mut r = h.http.get(format!("{base}/dashboard"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = dash(None).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(dash(Some("wrong")).await.unwrap().status().as_u16(), 401);
    assert_eq!(dash(Some("admin-secret")).await.unwrap().status().as_u16(), 200);
    let html = dash(Some("viewer-secret")).await.unwrap().text().await.unwrap();
    assert!(
        html.contains("data-group='ticketflow.validate' data-status='STOP'"),
        "{html}"
    );
    // The viewer token reads; it does not act.
    let r = h
        .http
        .post(format!("{base}/api/v1/dlq/retry"))
        .bearer_auth("viewer-secret")
        .json(&serde_json::json!({"stage": "update"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Consumers come back: the backlog drains and the group is OK again.
    h.restart(&["ingest", "validate", "context", "synthesize", "update", "record"])
        .await;
    let base = h.base();
    let v = wait_status(&h, &base, "ticketflow.validate", "OK").await;
    assert_eq!(group(&v, "ticketflow.validate")["total_lag"], 0, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_reads_without_committing_is_stall() {
    let _serial = SERIAL.lock().await;
    let mut h = Harness::start(LAG_VARS).await;
    h.add_tenant(&tenant("acme")).await;
    h.restart(&["ingest"]).await;
    for i in 0..5 {
        let (s, v) = h.send("acme", &format!("S-{i}"), &format!("wh-s-{i}"), "disk").await;
        assert_eq!(s, 202, "{v}");
    }
    // A member of the validate group that takes records and never commits.
    let stuck: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &h.running().bootstrap)
        .set("group.id", "ticketflow.validate")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    stuck.subscribe(&["ticketflow.webhooks"]).unwrap();
    let poller = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(45);
        let mut seen = 0;
        while Instant::now() < until && seen < 1_000_000 {
            if let Some(Ok(_)) = stuck.poll(Duration::from_millis(200)) {
                seen += 1;
            }
            if std::path::Path::new(&std::env::temp_dir().join("tf-stall-stop")).exists() {
                break;
            }
        }
        stuck.unsubscribe();
    });
    let base = h.base();
    let v = wait_status(&h, &base, "ticketflow.validate", "STALL").await;
    let g = group(&v, "ticketflow.validate");
    assert_eq!(g["members"], 1, "{g}");
    assert_eq!(g["total_lag"], 5, "{g}");
    assert!(g["reason"].as_str().unwrap().contains("member(s) but offset"), "{g}");
    let _ = std::fs::write(std::env::temp_dir().join("tf-stall-stop"), b"");
    tokio::task::spawn_blocking(move || poller.join())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_file(std::env::temp_dir().join("tf-stall-stop"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stage_only_process_serves_health_metrics_and_lag_on_its_ops_address() {
    let _serial = SERIAL.lock().await;
    let mut h = Harness::start(LAG_VARS).await;
    h.restart(&["validate", "context"]).await;
    let running = h.running();
    assert!(running.http_addr.is_none());
    let ops = format!("http://{}", running.ops_addr.expect("an ops address"));
    assert_eq!(
        h.http
            .get(format!("{ops}/health"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = h.http.get(format!("{ops}/health/ready")).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if status == 200 {
            assert_eq!(body["status"], "ready");
            assert_eq!(body["checks"]["stage:validate"]["status"], "ok", "{body}");
            assert_eq!(body["checks"]["stage:context"]["status"], "ok", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = metrics_now(&h, &ops).await;
        assert!(metrics.contains("process_cpu_seconds_total"), "{metrics}");
        if metrics.contains(r#"ticketflow_stage_ready{stage="validate"} 1"#) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Its monitor watches its own groups (TICKETFLOW_LAG_MONITOR=auto).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metrics_now(&h, &ops)
        .await
        .contains(r#"ticketflow_consumer_group_status{group="ticketflow.context",status="OK"} 1"#)
    {
        assert!(Instant::now() < deadline, "no lag status from the stage-only process");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // No webhooks here: ingest does not run in this process.
    let r = h
        .http
        .post(format!("{ops}/webhooks/servicedesk/acme"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let (code, v) = api_lag(&h, &ops, "viewer-secret").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["groups"].as_array().unwrap().len(), 5, "{v}");
    h.stop().await;
}

async fn metrics_now(h: &Harness, base: &str) -> String {
    h.http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_renders_in_headless_chromium_behind_the_viewer_token() {
    let _serial = SERIAL.lock().await;
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed (CI installs it: .ci/run)"
        );
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let mut h = Harness::start(LAG_VARS).await;
    h.add_tenant(&tenant("acme")).await;
    h.restart(&["ingest"]).await;
    for i in 0..6 {
        let (s, v) = h.send("acme", &format!("D-{i}"), &format!("wh-d-{i}"), "mail").await;
        assert_eq!(s, 202, "{v}");
    }
    let base = h.base();
    wait_status(&h, &base, "ticketflow.validate", "STOP").await;
    let addr = h.running().http_addr.unwrap();
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        let mut c = Command::new(&browser);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,1500",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra);
        c.output().expect("chromium runs")
    };
    // Credentials in the URL answer the page's Basic challenge (password =
    // token). Chromium runs on this worker; the server on the others.
    let authed = format!("http://viewer:viewer-secret@{addr}/dashboard");
    let dom = run(&["--dump-dom".into(), authed.clone()]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.contains("data-group=\"ticketflow.validate\" data-status=\"STOP\""),
        "chromium did not render the dashboard: {dom}"
    );
    assert!(dom.contains("<polyline"), "lag chart missing: {dom}");
    // Without the token the browser gets the challenge, not the page.
    let denied = run(&["--dump-dom".into(), format!("http://{addr}/dashboard")]);
    let denied = String::from_utf8_lossy(&denied.stdout).into_owned();
    assert!(!denied.contains("data-status"), "{denied}");
    let out = run(&[format!("--screenshot={}", shot.display()), authed]);
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert!(png.len() > 20_000, "screenshot suspiciously small: {} bytes", png.len());
    eprintln!("dashboard screenshot: {}", shot.display());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stage_only_processes_on_one_host_without_an_ops_address_each_find_a_port() {
    let _serial = SERIAL.lock().await;
    let mut h = Harness::start(LAG_VARS).await;
    h.restart(&["ingest"]).await;
    // Two more processes on the harness's broker, record stage only.
    let mut config = h.config.clone();
    config.kafka_brokers = Some(h.running().bootstrap.clone());
    config.ops_addr = None;
    let a = topology::app::start(&config, &["record".to_string()]).await.unwrap();
    let b = topology::app::start(&config, &["record".to_string()]).await.unwrap();
    let (pa, pb) = (a.ops_addr.unwrap(), b.ops_addr.unwrap());
    assert_ne!(pa, pb);
    for addr in [pa, pb] {
        let r = h.http.get(format!("http://{addr}/health")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // An address set explicitly and taken is an error, not a silent move.
    config.ops_addr = Some(pa);
    let err = topology::app::start(&config, &["record".to_string()])
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("binding TICKETFLOW_OPS_ADDR"), "{err:#}");
    a.stop().await;
    b.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_does_not_answer_is_err_promptly() {
    let _serial = SERIAL.lock().await;
    let mut h = Harness::start(LAG_VARS).await;
    let bootstrap = h.running().bootstrap.clone();
    h.stop().await;
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ticketflow"))
        .args(["lag", "--json", "--window", "2s", "--interval", "500ms"])
        .env("KAFKA_BROKERS", &bootstrap)
        .env("TICKETFLOW_DATA_DIR", h.dir.path())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 5, "{v}");
    assert!(groups.iter().all(|g| g["status"] == "ERR"), "{v}");
    assert!(
        groups[1]["reason"]
            .as_str()
            .unwrap()
            .contains("the broker does not answer"),
        "{v}"
    );
    // One sample: the first group waits out its timeouts, the rest are not tried.
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}
