//! Tenant lifecycle (`ticketflow tenants update|suspend|resume|rotate-token|
//! remove --purge`, secrets from files and stdin, sealing at rest), run as
//! the `ticketflow` binary against the store of a temp data dir, beside an
//! in-process pipeline where webhooks and stages are involved.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Harness, Tenant};
use serde_json::{json, Value};
use sinks::servicedesk::SdpAuth;
use sinks::store::{hash_token, EmbeddedStore, HistoryStatus, TenantStore};

/// A data dir's `ticketflow` command line.
struct Cli {
    dir: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    fn new(dir: &Path) -> Self {
        Cli {
            dir: dir.to_path_buf(),
            env: Vec::new(),
        }
    }

    fn with_env(dir: &Path, k: &str, v: &str) -> Self {
        Cli {
            dir: dir.to_path_buf(),
            env: vec![(k.into(), v.into())],
        }
    }

    /// Runs `ticketflow <args>` with `stdin` (empty when `None`).
    fn run_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ticketflow"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TICKETFLOW_DATA_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, None)
    }

    fn ok_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run_in(args, stdin);
        assert!(
            out.status.success(),
            "ticketflow {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and asserts a non-zero exit with one line on stderr containing `want`.
    fn refused(&self, args: &[&str], stdin: Option<&str>, want: &str) {
        let out = self.run_in(args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ticketflow {args:?} succeeded: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "ticketflow {args:?}: not one line: {err:?}"
        );
        assert!(err.contains(want), "ticketflow {args:?}: {err:?} does not say {want:?}");
    }

    /// `tenants add <id> --json` with a token on the command line.
    fn add(&self, id: &str, url: &str, token: &str, auth: &str) -> Value {
        let out = self.ok(&[
            "tenants",
            "add",
            id,
            "--servicedesk-url",
            url,
            "--servicedesk-token",
            token,
            "--servicedesk-auth",
            auth,
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    }
}

async fn open_store(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(&dir.join("store.db")).await.unwrap()
}

/// Signs and sends a webhook with `secret`; returns status and JSON body.
async fn send_signed(h: &Harness, tenant: &str, secret: &str, webhook_id: &str, ticket: &str) -> (u16, Value) {
    let body =
        json!({"event": "request_created", "request": {"id": ticket, "subject": format!("Printer {ticket} jams"),
        "requester": {"name": "Test", "email": "t@example.test"}}})
        .to_string();
    let ts = sinks::now_ms() / 1000;
    let sig = ingest::signature::sign(secret, webhook_id, ts, body.as_bytes()).unwrap();
    let resp = h
        .http
        .post(format!("{}/webhooks/servicedesk/{tenant}", h.base()))
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn api_get(h: &Harness, token: &str, path: &str) -> (u16, Value) {
    let resp = h
        .http
        .get(format!("{}{path}", h.base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Longer than the tenant cache's TTL: running components see a change.
async fn past_cache_ttl() {
    tokio::time::sleep(topology::app::TENANT_CACHE_TTL + Duration::from_millis(500)).await;
}

const ACME: Tenant = Tenant {
    id: "acme",
    auth: SdpAuth::Zoho,
    token: "zoho-acme",
};

#[tokio::test]
async fn update_changes_only_given_fields_and_keeps_the_api_token() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(dir.path());
    let added = cli.add("acme", "http://sdp.example:8080", "tok-1", "authtoken");
    let api_token = added["api_token"].as_str().unwrap();
    let secret = added["webhook_secret"].as_str().unwrap();

    let out = cli.ok(&[
        "tenants",
        "update",
        "acme",
        "--requests-per-minute",
        "42",
        "--events",
        "request_created, request_updated",
    ]);
    assert!(out.contains("requests_per_minute, enabled_events"), "{out}");
    let store = open_store(dir.path()).await;
    let t = store.get_tenant("acme").await.unwrap().unwrap();
    assert_eq!(t.requests_per_minute, 42);
    assert_eq!(t.enabled_events, ["request_created", "request_updated"]);
    assert_eq!(t.sdp.base_url, "http://sdp.example:8080", "not given: unchanged");
    assert_eq!(t.sdp.auth, SdpAuth::AuthToken);
    assert_eq!(t.sdp.token.expose(), "tok-1");
    drop(store);

    cli.ok_in(
        &[
            "tenants",
            "update",
            "acme",
            "--servicedesk-url",
            "https://sdp.example/app/itdesk/",
            "--servicedesk-auth",
            "zoho",
            "--servicedesk-token-stdin",
        ],
        Some("tok-2\n"),
    );
    let store = open_store(dir.path()).await;
    let t = store.get_tenant("acme").await.unwrap().unwrap();
    assert_eq!(t.sdp.base_url, "https://sdp.example/app/itdesk");
    assert_eq!(t.sdp.auth, SdpAuth::Zoho);
    assert_eq!(t.sdp.token.expose(), "tok-2", "trailing newline trimmed");
    assert_eq!(t.requests_per_minute, 42, "not given: unchanged");
    assert_eq!(
        t.webhook_secrets.current.expose(),
        secret,
        "update keeps the webhook secret"
    );
    assert!(t.suspended.is_none());
    let by_token = store.tenant_by_api_token_hash(&hash_token(api_token)).await.unwrap();
    assert_eq!(
        by_token.map(|t| t.tenant_id).as_deref(),
        Some("acme"),
        "update keeps the API token"
    );
    drop(store);

    let list: Value = serde_json::from_str(&cli.ok(&["tenants", "list", "--json"])).unwrap();
    assert_eq!(list[0]["servicedesk_auth"], "zoho");
    assert_eq!(list[0]["suspended"], Value::Null);
    assert!(!list.to_string().contains("tok-2"), "list never prints secrets");
}

#[tokio::test]
async fn secrets_come_from_a_file_or_stdin_with_the_trailing_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(dir.path());
    let token_file = dir.path().join("sdp-token");
    std::fs::write(&token_file, "file-token\n").unwrap();
    let secret = ingest::signature::generate_secret();
    let out = cli.ok_in(
        &[
            "tenants",
            "add",
            "acme",
            "--servicedesk-url",
            "https://sdp.example",
            "--servicedesk-token-file",
            token_file.to_str().unwrap(),
            "--webhook-secret-stdin",
            "--json",
        ],
        Some(&format!("{secret}\r\n")),
    );
    let added: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(added["webhook_secret"], secret.as_str());
    let store = open_store(dir.path()).await;
    let t = store.get_tenant("acme").await.unwrap().unwrap();
    assert_eq!(t.sdp.token.expose(), "file-token");
    assert_eq!(t.webhook_secrets.current.expose(), secret);
    drop(store);

    // The SDP token from stdin and the webhook secret from a file.
    let secret_file = dir.path().join("whsec");
    let secret2 = ingest::signature::generate_secret();
    std::fs::write(&secret_file, format!("{secret2}\n")).unwrap();
    cli.ok_in(
        &[
            "tenants",
            "add",
            "globex",
            "--servicedesk-url",
            "https://sdp.example",
            "--servicedesk-token-stdin",
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
        ],
        Some("stdin-token\n"),
    );
    // rotate-secret from a file, then from stdin.
    let secret3 = ingest::signature::generate_secret();
    std::fs::write(&secret_file, format!("{secret3}\n")).unwrap();
    cli.ok(&[
        "tenants",
        "rotate-secret",
        "acme",
        "--webhook-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    let secret4 = ingest::signature::generate_secret();
    cli.ok_in(
        &["tenants", "rotate-secret", "globex", "--webhook-secret-stdin"],
        Some(&format!("{secret4}\n")),
    );

    let store = open_store(dir.path()).await;
    let g = store.get_tenant("globex").await.unwrap().unwrap();
    assert_eq!(g.sdp.token.expose(), "stdin-token");
    assert_eq!(g.webhook_secrets.current.expose(), secret4);
    assert_eq!(g.webhook_secrets.previous.as_ref().unwrap().expose(), secret2);
    let a = store.get_tenant("acme").await.unwrap().unwrap();
    assert_eq!(a.webhook_secrets.current.expose(), secret3);
    assert_eq!(a.webhook_secrets.previous.as_ref().unwrap().expose(), secret);
}

#[tokio::test]
async fn every_bad_input_is_refused_with_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(dir.path());
    cli.add("acme", "https://sdp.example", "tok", "authtoken");
    let file = dir.path().join("token");
    std::fs::write(&file, "t\n").unwrap();
    let file = file.to_str().unwrap();
    let empty_file = dir.path().join("empty");
    std::fs::write(&empty_file, "\n").unwrap();
    let empty_file = empty_file.to_str().unwrap();
    let url = "https://sdp.example";
    let secret = ingest::signature::generate_secret();

    type Case<'a> = (&'a [&'a str], Option<&'a str>, &'a str);
    let cases: &[Case] = &[
        // update
        (
            &["tenants", "update", "ghost", "--requests-per-minute", "5"],
            None,
            "tenant 'ghost' does not exist",
        ),
        (&["tenants", "update", "acme"], None, "nothing to update"),
        (
            &["tenants", "update", "acme", "--servicedesk-url", "ftp://x"],
            None,
            "invalid --servicedesk-url",
        ),
        (
            &["tenants", "update", "acme", "--servicedesk-url", "not a url"],
            None,
            "invalid --servicedesk-url",
        ),
        (
            &[
                "tenants",
                "update",
                "acme",
                "--servicedesk-url",
                "https://h/api/v3/requests",
            ],
            None,
            "give the base URL",
        ),
        (
            &["tenants", "update", "acme", "--servicedesk-auth", "basic"],
            None,
            "unknown SDP auth 'basic'",
        ),
        (
            &["tenants", "update", "acme", "--servicedesk-token", ""],
            None,
            "--servicedesk-token must not be empty",
        ),
        (
            &["tenants", "update", "acme", "--servicedesk-token", "  "],
            None,
            "--servicedesk-token must not be empty",
        ),
        (
            &["tenants", "update", "acme", "--servicedesk-token-stdin"],
            Some(""),
            "--servicedesk-token must not be empty",
        ),
        (
            &["tenants", "update", "acme", "--servicedesk-token-file", empty_file],
            None,
            "must not be empty",
        ),
        (
            &[
                "tenants",
                "update",
                "acme",
                "--servicedesk-token-file",
                "/nonexistent/token",
            ],
            None,
            "cannot read --servicedesk-token-file /nonexistent/token",
        ),
        (
            &[
                "tenants",
                "update",
                "acme",
                "--servicedesk-token",
                "x",
                "--servicedesk-token-stdin",
            ],
            Some("y"),
            "give only one of --servicedesk-token, --servicedesk-token-file and --servicedesk-token-stdin",
        ),
        (
            &[
                "tenants",
                "update",
                "acme",
                "--servicedesk-token-file",
                file,
                "--servicedesk-token-stdin",
            ],
            Some("y"),
            "give only one of",
        ),
        (
            &["tenants", "update", "acme", "--requests-per-minute", "0"],
            None,
            "--requests-per-minute must be at least 1",
        ),
        (
            &["tenants", "update", "acme", "--events", " , "],
            None,
            "--events must name at least one event",
        ),
        (
            &["tenants", "update", "acme", "--events", "a b"],
            None,
            "invalid event 'a b'",
        ),
        (
            &["tenants", "update", "bad id!", "--requests-per-minute", "5"],
            None,
            "invalid tenant id",
        ),
        // add
        (
            &["tenants", "add", "beta", "--servicedesk-url", url],
            None,
            "give the SDP token with",
        ),
        (
            &[
                "tenants",
                "add",
                "beta",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "t",
                "--servicedesk-token-file",
                file,
            ],
            None,
            "give only one of --servicedesk-token",
        ),
        (
            &[
                "tenants",
                "add",
                "beta",
                "--servicedesk-url",
                url,
                "--servicedesk-token-stdin",
                "--webhook-secret-stdin",
            ],
            Some("t"),
            "only one secret can come from stdin",
        ),
        (
            &[
                "tenants",
                "add",
                "beta",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "t",
                "--webhook-secret",
                &secret,
                "--webhook-secret-file",
                file,
            ],
            None,
            "give only one of --webhook-secret, --webhook-secret-file and --webhook-secret-stdin",
        ),
        (
            &[
                "tenants",
                "add",
                "beta",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "t",
                "--webhook-secret-file",
                file,
            ],
            None,
            "invalid --webhook-secret",
        ),
        (
            &[
                "tenants",
                "add",
                "beta",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "t",
                "--webhook-secret-stdin",
            ],
            Some("\n"),
            "--webhook-secret must not be empty",
        ),
        (
            &[
                "tenants",
                "add",
                "beta",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "",
            ],
            None,
            "must not be empty",
        ),
        (
            &[
                "tenants",
                "add",
                "beta",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "t",
                "--servicedesk-auth",
                "oauth",
            ],
            None,
            "unknown SDP auth 'oauth'",
        ),
        (
            &[
                "tenants",
                "add",
                "beta",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "t",
                "--events",
                ",",
            ],
            None,
            "--events",
        ),
        (
            &[
                "tenants",
                "add",
                "acme",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "t",
            ],
            None,
            "tenant 'acme' already exists",
        ),
        (
            &[
                "tenants",
                "add",
                "bad id!",
                "--servicedesk-url",
                url,
                "--servicedesk-token",
                "t",
            ],
            None,
            "invalid tenant id",
        ),
        // suspend / resume
        (&["tenants", "suspend", "ghost"], None, "tenant 'ghost' does not exist"),
        (
            &["tenants", "suspend", "acme", "--reason", " "],
            None,
            "--reason must not be empty",
        ),
        (
            &["tenants", "suspend", "acme", "--reason", "two\nlines"],
            None,
            "--reason must be one line",
        ),
        (&["tenants", "resume", "ghost"], None, "tenant 'ghost' does not exist"),
        (&["tenants", "resume", "acme"], None, "tenant 'acme' is not suspended"),
        // rotate-token / rotate-secret
        (
            &["tenants", "rotate-token", "ghost"],
            None,
            "tenant 'ghost' does not exist",
        ),
        (
            &["tenants", "rotate-secret", "ghost"],
            None,
            "tenant 'ghost' does not exist",
        ),
        (
            &[
                "tenants",
                "rotate-secret",
                "acme",
                "--webhook-secret",
                &secret,
                "--webhook-secret-stdin",
            ],
            Some("x"),
            "give only one of --webhook-secret",
        ),
        (
            &[
                "tenants",
                "rotate-secret",
                "acme",
                "--webhook-secret-file",
                "/nonexistent/s",
            ],
            None,
            "cannot read --webhook-secret-file",
        ),
        (
            &["tenants", "rotate-secret", "acme", "--webhook-secret-stdin"],
            Some("whsec_nope\n"),
            "invalid --webhook-secret",
        ),
        // remove
        (&["tenants", "remove", "ghost"], None, "tenant 'ghost' does not exist"),
        (
            &["tenants", "remove", "ghost", "--purge"],
            None,
            "tenant 'ghost' does not exist",
        ),
    ];
    for (args, stdin, want) in cases {
        cli.refused(args, *stdin, want);
    }

    // Nothing of the refused commands reached the store.
    let store = open_store(dir.path()).await;
    let tenants = store.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    let t = &tenants[0];
    assert_eq!(
        (t.sdp.base_url.as_str(), t.sdp.token.expose(), t.requests_per_minute),
        ("https://sdp.example", "tok", 600)
    );
    assert!(t.suspended.is_none() && t.webhook_secrets.previous.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspended_tenant_gets_403_its_queued_record_is_skipped_and_resume_accepts_again() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    let cli = Cli::new(h.dir.path());

    // A webhook accepted while only ingest runs: its record waits in Kafka.
    h.restart(&["ingest"]).await;
    let (status, body) = h.send("acme", "101", "wh-queued", "Mail bounces").await;
    assert_eq!(status, 202, "{body}");
    let queued_job = body["job_id"].as_str().unwrap().to_string();

    let out = cli.ok(&["tenants", "suspend", "acme", "--reason", "contract paused"]);
    assert!(out.contains("suspended"), "{out}");
    let list: Value = serde_json::from_str(&cli.ok(&["tenants", "list", "--json"])).unwrap();
    assert_eq!(list[0]["suspended"], "contract paused");
    assert!(cli.ok(&["tenants", "list"]).contains("yes: contract paused"));

    // The stages come up and find the tenant suspended.
    h.restart(&topology::app::COMPONENTS).await;
    let sdp_calls = h.sdp.calls();
    let llm_calls = h.llm.requests();
    let rows = h
        .wait_history(&[("acme".into(), queued_job.clone())], Duration::from_secs(60))
        .await;
    let row = &rows[&queued_job];
    assert_eq!(row.status, HistoryStatus::Skipped, "{row:?}");
    assert_eq!(row.error_message.as_deref(), Some("tenant suspended: contract paused"));
    assert!(row.note_id.is_none());
    assert!(h.sdp.notes().is_empty(), "no note for a suspended tenant");
    assert_eq!(h.sdp.calls(), sdp_calls, "no SDP call for a suspended tenant's record");
    assert_eq!(
        h.llm.requests(),
        llm_calls,
        "no LLM call for a suspended tenant's record"
    );

    // New webhooks: 403 with a specific code, but only for a valid signature.
    let (status, body) = h.send("acme", "102", "wh-suspended", "Disk full").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "tenant_suspended");
    assert!(
        !body.to_string().contains("contract paused"),
        "the operator's reason stays internal: {body}"
    );
    let stranger = ingest::signature::generate_secret();
    let (status, body) = send_signed(&h, "acme", &stranger, "wh-stranger", "103").await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden", "a stranger learns nothing: {body}");

    // Resume: accepted and enhanced again.
    let out = cli.ok(&["tenants", "resume", "acme"]);
    assert!(out.contains("contract paused"), "{out}");
    past_cache_ttl().await;
    let (status, body) = h.send("acme", "104", "wh-resumed", "VPN drops").await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_string();
    let rows = h
        .wait_history(&[("acme".into(), job.clone())], Duration::from_secs(60))
        .await;
    assert!(
        matches!(rows[&job].status, HistoryStatus::Success | HistoryStatus::Fallback),
        "{:?}",
        rows[&job]
    );
    // The refused webhook was never produced: only the queued and the resumed jobs exist.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = h.running().store.recent_history("acme", 100).await.unwrap();
    let mut jobs: Vec<&str> = all.iter().map(|r| r.job_id.as_str()).collect();
    jobs.sort();
    let mut want = vec![queued_job.as_str(), job.as_str()];
    want.sort();
    assert_eq!(jobs, want);
    assert_eq!(h.sdp.notes().len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_token_retires_the_old_one_and_remove_purge_leaves_nothing_behind() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    let cli = Cli::new(h.dir.path());
    let old_token = h.tokens["acme"].clone();
    assert_eq!(api_get(&h, &old_token, "/api/v1/feedback").await.0, 200);

    let out: Value = serde_json::from_str(&cli.ok(&["tenants", "rotate-token", "acme", "--json"])).unwrap();
    let new_token = out["api_token"].as_str().unwrap().to_string();
    assert!(new_token.starts_with("tf_") && new_token != old_token);
    assert_eq!(
        api_get(&h, &old_token, "/api/v1/feedback").await.0,
        401,
        "old token retired"
    );
    assert_eq!(api_get(&h, &new_token, "/api/v1/feedback").await.0, 200);
    // The webhook secret is untouched by a token rotation.
    let (status, body) = h.send("acme", "201", "wh-1", "Laptop will not boot").await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_string();
    h.wait_history(&[("acme".into(), job.clone())], Duration::from_secs(60))
        .await;

    // History remains: removal is refused, and nothing is removed.
    cli.refused(
        &["tenants", "remove", "acme"],
        None,
        "tenant 'acme' still has history, feedback or claims; remove it with --purge",
    );
    assert!(h.running().store.get_tenant("acme").await.unwrap().is_some());
    let out = cli.ok(&["tenants", "remove", "acme", "--purge"]);
    assert!(out.contains("removed"), "{out}");
    let store = &h.running().store;
    assert!(store.get_tenant("acme").await.unwrap().is_none());
    assert!(store.history_by_job("acme", &job).await.unwrap().is_none());
    assert!(!store.tenant_has_data("acme").await.unwrap());

    // Added again under the same id: a fresh tenant with no past.
    let added = cli.add("acme", &h.sdp.base_url("acme"), ACME.token, "zoho");
    let token = added["api_token"].as_str().unwrap().to_string();
    h.secrets
        .insert("acme".into(), added["webhook_secret"].as_str().unwrap().into());
    let (status, body) = api_get(&h, &token, "/api/v1/enhancements?ticket_id=201").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enhancements"], json!([]), "no old history");
    assert_eq!(api_get(&h, &new_token, "/api/v1/feedback").await.0, 401);
    past_cache_ttl().await;
    // The old webhook-id's claim went with the purge: a new job, not a duplicate.
    let (status, body) = h.send("acme", "201", "wh-1", "Laptop will not boot").await;
    assert_eq!(status, 202, "{body}");
    assert!(body.get("duplicate").is_none(), "{body}");
    assert_ne!(body["job_id"].as_str().unwrap(), job);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_key_seals_secrets_at_rest_and_a_wrong_key_is_refused() {
    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const WRONG: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    let mut h = Harness::start(&[("TICKETFLOW_MASTER_KEY", KEY)]).await;
    h.add_tenant(&ACME).await;
    let secret = h.secrets["acme"].clone();
    // The tenant works: its sealed webhook secret verifies, its sealed SDP token posts the note.
    let (status, body) = h.send("acme", "301", "wh-sealed", "Badge reader offline").await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_string();
    let rows = h
        .wait_history(&[("acme".into(), job.clone())], Duration::from_secs(60))
        .await;
    assert!(rows[&job].note_id.is_some(), "{:?}", rows[&job]);
    assert_eq!(h.sdp.notes().len(), 1);
    h.stop().await;

    // The raw bytes of the store (database and WAL) hold no plaintext secret.
    let dir = h.dir.path();
    for f in ["store.db", "store.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(f)) {
            for plain in [ACME.token, secret.as_str()] {
                assert!(
                    !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
                    "{f} holds a plaintext secret"
                );
            }
        }
    }
    // The row itself, read with the sqlite3 CLI where installed.
    match Command::new("sqlite3")
        .arg(dir.join("store.db"))
        .arg("SELECT sdp_token, webhook_secret FROM tenants WHERE tenant_id = 'acme'")
        .output()
    {
        Ok(out) if out.status.success() => {
            let row = String::from_utf8_lossy(&out.stdout);
            let cols: Vec<&str> = row.trim().split('|').collect();
            assert_eq!(cols.len(), 2, "{row}");
            for c in cols {
                assert!(sinks::store::is_sealed(c), "not sealed: {c}");
            }
        }
        other => eprintln!("sqlite3 CLI not usable ({other:?}); raw-byte check only"),
    }

    // The CLI with the key reads the tenant; a wrong or missing key is refused clearly.
    let cli = Cli::with_env(dir, "TICKETFLOW_MASTER_KEY", KEY);
    assert!(cli.ok(&["tenants", "list"]).contains("acme"));
    cli.ok(&["tenants", "update", "acme", "--requests-per-minute", "100"]);
    let wrong = Cli::with_env(dir, "TICKETFLOW_MASTER_KEY", WRONG);
    wrong.refused(
        &["tenants", "list"],
        None,
        "does not decrypt with TICKETFLOW_MASTER_KEY",
    );
    wrong.refused(
        &["tenants", "update", "acme", "--requests-per-minute", "5"],
        None,
        "does not decrypt with TICKETFLOW_MASTER_KEY",
    );
    Cli::new(dir).refused(&["tenants", "list"], None, "TICKETFLOW_MASTER_KEY is not set");
    Cli::with_env(dir, "TICKETFLOW_MASTER_KEY", "short").refused(&["tenants", "list"], None, "TICKETFLOW_MASTER_KEY");
    // Still sealed with the right key after the update (values re-sealed, not opened).
    let store = EmbeddedStore::open_with(
        &dir.join("store.db"),
        sinks::store::StoreOptions {
            sealer: std::sync::Arc::new(sinks::store::Sealer::from_key_text(KEY).unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t = store.get_tenant("acme").await.unwrap().unwrap();
    assert_eq!(t.sdp.token.expose(), ACME.token);
    assert_eq!(t.webhook_secrets.current.expose(), secret);
    assert_eq!(t.requests_per_minute, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_past_validate_when_the_tenant_is_suspended_ends_skipped_without_an_llm_call() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    let cli = Cli::new(h.dir.path());
    // Warm up: every stage consuming.
    let (status, body) = h.send("acme", "401", "wh-warm", "Warm up").await;
    assert_eq!(status, 202, "{body}");
    let warm = body["job_id"].as_str().unwrap().to_string();
    h.wait_history(&[("acme".into(), warm)], Duration::from_secs(60)).await;
    let (sdp_calls, llm_calls, notes) = (h.sdp.calls(), h.llm.requests(), h.sdp.notes().len());

    // Context takes 5 s; the tenant is suspended meanwhile.
    h.sdp.set_latency(sinks::sim::Latency::fixed(Duration::from_secs(5)));
    let (status, body) = h.send("acme", "402", "wh-slow", "Projector flickers").await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cli.ok(&["tenants", "suspend", "acme", "--reason", "audit"]);
    let rows = h
        .wait_history(&[("acme".into(), job.clone())], Duration::from_secs(60))
        .await;
    let row = &rows[&job];
    assert_eq!(row.status, HistoryStatus::Skipped, "{row:?}");
    assert_eq!(row.error_message.as_deref(), Some("tenant suspended: audit"));
    assert!(
        h.sdp.calls() > sdp_calls,
        "the record was past validate (context called SDP)"
    );
    assert_eq!(h.llm.requests(), llm_calls, "no LLM call after the suspension");
    assert_eq!(h.sdp.notes().len(), notes, "no note after the suspension");
    h.stop().await;
}
