//! External mode against a real deployment: Ticketflow is started here,
//! in this test's process (embedded broker and store in a temporary
//! directory), configured the way an operator configures a deployment for
//! the harness (tenant's SDP URL at the harness's SDP simulator,
//! LLM_BASE_URL at its LLM simulator); the harness binary then drives it
//! over HTTP only and must account for every webhook.

use std::collections::HashMap;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the harness with its output in files under `dir`, killing it if it
/// outlives `limit`. Returns the exit status, stdout and stderr.
fn run_bounded(cmd: &mut Command, dir: &std::path::Path, limit: Duration) -> (ExitStatus, String, String) {
    let (out_path, err_path) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "loadtest still running after {limit:?}; killed:\n{}\n{}",
                read(&out_path),
                read(&err_path)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, read(&out_path), read(&err_path))
}

#[test]
fn external_mode_accounts_for_every_webhook_of_a_running_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(drive_a_running_deployment(dir.path()));
    // Blocking work the deployment still runs (an admin lag read the
    // harness stopped waiting for) gets a bound, not a hang.
    rt.shutdown_timeout(Duration::from_secs(5));
}

async fn drive_a_running_deployment(data_dir: &std::path::Path) {
    let (sdp_port, llm_port) = (free_port(), free_port());
    let admin_token = "loadtest-admin-token";
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("TICKETFLOW_DATA_DIR".into(), data_dir.display().to_string());
    vars.insert("TICKETFLOW_BROKER_ADDR".into(), format!("127.0.0.1:{}", free_port()));
    vars.insert("TICKETFLOW_HTTP_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("TICKETFLOW_OPS_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("TICKETFLOW_PARTITIONS".into(), "2".into());
    vars.insert("TICKETFLOW_RETRY_TIERS".into(), "2s,5s,10s".into());
    vars.insert("TICKETFLOW_TENANT_RATE".into(), "100000".into());
    vars.insert("TICKETFLOW_ADMIN_TOKEN".into(), admin_token.into());
    vars.insert("LLM_BASE_URL".into(), format!("http://127.0.0.1:{llm_port}/v1"));
    let config = topology::config::Config::from_map(&vars).unwrap();
    let components: Vec<String> = topology::app::COMPONENTS.iter().map(|c| c.to_string()).collect();
    let running = topology::app::start(&config, &components).await.unwrap();
    let target = format!("http://{}", running.http_addr.unwrap());

    // Two tenants, configured as the harness prints at its start.
    let mut tenants = Vec::new();
    for id in ["ext0", "ext1"] {
        let (secret, api_token) = topology::tenants::add(
            running.store.as_ref(),
            topology::tenants::AddTenant {
                tenant_id: id.into(),
                servicedesk_url: format!("http://127.0.0.1:{sdp_port}/app/{id}"),
                servicedesk_token: "loadtest-sdp-token".into(),
                servicedesk_auth: "authtoken".into(),
                webhook_secret: None,
                requests_per_minute: 100_000,
                events: vec!["request_created".into(), "request_updated".into()],
            },
        )
        .await
        .unwrap();
        tenants.push((id, secret, api_token));
    }

    let sims = [
        "--sdp-sim-addr".to_string(),
        format!("127.0.0.1:{sdp_port}"),
        "--llm-sim-addr".to_string(),
        format!("127.0.0.1:{llm_port}"),
    ];
    let mut with_tokens: Vec<String> = sims.to_vec();
    let mut without_tokens: Vec<String> = sims.to_vec();
    with_tokens.extend(["--admin-token".to_string(), admin_token.to_string()]);
    for (id, secret, api_token) in &tenants {
        with_tokens.extend(["--tenant", id, "--webhook-secret", secret, "--api-token", api_token].map(String::from));
        without_tokens.extend(["--tenant", id, "--webhook-secret", secret].map(String::from));
    }

    // pipeline, everything observable: 30 webhooks, each one note.
    let (stdout, report) = run_harness(&target, "pipeline", 30, &with_tokens).await;
    assert!(stdout.contains("external mode: target"), "{stdout}");
    assert_eq!(report["target"], target.as_str());
    let args = report["args"].as_str().unwrap();
    for (_, secret, api_token) in &tenants {
        assert!(
            !args.contains(secret.as_str()) && !args.contains(api_token.as_str()),
            "secrets in report.json: {args}"
        );
    }
    assert!(!args.contains(admin_token), "{args}");
    let acc = &report["pipeline"]["accounting"];
    assert_eq!(acc["accepted"], 30, "{acc}");
    assert_eq!(acc["notes"], 30, "{acc}");
    assert_eq!(acc["lost"], 0, "{acc}");
    assert_eq!(acc["duplicates"], 0, "{acc}");
    assert_eq!(acc["skipped"], 0, "{acc}");
    assert_eq!(acc["dlq_records"], 0, "{acc}");
    assert_eq!(acc["balanced"], true, "{acc}");
    assert_eq!(acc["observed"]["history"], true, "{acc}");
    assert_eq!(report["pipeline"]["e2e_latency"]["count"], 30, "{report}");
    assert_eq!(report["ingest"]["latency"]["count"], 30, "{report}");

    // Without tokens: notes still counted; history and DLQ reported as not
    // observed (null), never as 0. New ticket ids each run, so the
    // deployment does not skip them as repeats of the run above.
    let (_, report) = run_harness(&target, "pipeline", 10, &without_tokens).await;
    let acc = &report["pipeline"]["accounting"];
    assert_eq!(acc["accepted"], 10, "{acc}");
    assert_eq!(acc["notes"], 10, "{acc}");
    assert_eq!(acc["lost"], 0, "{acc}");
    assert_eq!(acc["duplicates"], 0, "{acc}");
    assert!(acc["skipped"].is_null() && acc["dlq_records"].is_null(), "{acc}");
    assert_eq!(acc["observed"]["history"], false, "{acc}");

    // ingest: every accepted webhook is one record more on the webhooks topic.
    let (_, report) = run_harness(&target, "ingest", 20, &with_tokens).await;
    let acc = &report["accounting"];
    assert_eq!(acc["accepted"], 20, "{acc}");
    assert_eq!(acc["records"], 20, "{acc}");
    assert_eq!(acc["lost"], 0, "{acc}");
    assert_eq!(acc["duplicates"], 0, "{acc}");
    running.stop().await;
}

/// One bounded harness run in external mode: `count` webhooks at 15/s.
async fn run_harness(target: &str, scenario: &str, count: usize, extra: &[String]) -> (String, serde_json::Value) {
    let out_dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    cmd.args(["--target-url", target, "--scenario", scenario])
        .args(["--rate", "15", "--duration", "3s", "--warmup", "0s"])
        .args(["--max-requests", &count.to_string()])
        .args(["--llm-latency", "100ms", "--sdp-latency", "5ms", "--settle", "120s"])
        .args(extra)
        .arg("--out")
        .arg(out_dir.path());
    let logs_path = logs.path().to_path_buf();
    let (status, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_bounded(&mut cmd, &logs_path, Duration::from_secs(240)))
            .await
            .unwrap();
    assert!(status.success(), "loadtest failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    let report = serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("report.json")).unwrap()).unwrap();
    (stdout, report)
}

#[test]
fn external_mode_refuses_what_it_cannot_do() {
    let refuse = |args: &[&str], reason: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(reason), "{args:?}: {err}");
    };
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    refuse(
        &[
            "--target-url",
            "http://10.1.2.3:8080",
            "--tenant",
            "a",
            "--webhook-secret",
            secret,
        ],
        "--allow-non-loopback",
    );
    refuse(
        &[
            "--target-url",
            "http://127.0.0.1:9",
            "--scenario",
            "broker-restart",
            "--tenant",
            "a",
            "--webhook-secret",
            secret,
        ],
        "needs the in-process rig",
    );
    refuse(
        &[
            "--target-url",
            "http://127.0.0.1:9",
            "--tenant",
            "a,b",
            "--webhook-secret",
            secret,
        ],
        "one secret per tenant",
    );
    refuse(&["--tenant", "a", "--webhook-secret", secret], "need --target-url");
    refuse(
        &["--sdp-sim-addr", "0.0.0.0:18081", "--scenario", "pipeline"],
        "--allow-non-loopback",
    );
    // Nothing listens on port 9 (discard): refused before a webhook is sent.
    refuse(
        &[
            "--target-url",
            "http://127.0.0.1:9",
            "--tenant",
            "a",
            "--webhook-secret",
            secret,
        ],
        "does not answer",
    );
}
