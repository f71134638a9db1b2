//! `ticketflow tenants add|update` with Zoho OAuth credentials (cloud SDP),
//! run as the binary against a temp data dir: secrets from files and stdin,
//! sealed at rest, never printed; every bad combination refused with one
//! line; the static Zoho token and on-prem `authtoken` kinds unchanged.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sinks::servicedesk::SdpAuth;
use sinks::store::{EmbeddedStore, Sealer, StoreOptions, TenantStore};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const SECRET: &str = "zoho-client-secret-5d1e";
const REFRESH: &str = "1000.zoho-refresh-token-88aa";

fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ticketflow"));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TICKETFLOW_DATA_DIR", dir)
        .env("TICKETFLOW_MASTER_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(dir, args, stdin);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ticketflow {args:?} failed: {all}");
    assert!(
        !all.contains(SECRET) && !all.contains(REFRESH),
        "a secret was printed: {all}"
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(dir: &Path, args: &[&str], stdin: Option<&str>, want: &str) {
    let out = run(dir, args, stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ticketflow {args:?} succeeded");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(want), "{args:?}: expected '{want}' in: {err}");
    assert!(!err.contains(SECRET) && !err.contains(REFRESH), "{err}");
}

async fn store(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open_with(
        &dir.join("store.db"),
        StoreOptions {
            sealer: std::sync::Arc::new(Sealer::from_key_text(KEY).unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn oauth_tenants_are_added_and_updated_from_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret_file = d.join("client-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let url = "https://sdpondemand.manageengine.eu/app/itdesk";
    let out = ok(
        d,
        &[
            "tenants",
            "add",
            "cloud",
            "--servicedesk-url",
            url,
            "--servicedesk-auth",
            "zoho-oauth",
            "--zoho-client-id",
            "1000.CLIENTID",
            "--zoho-client-secret-file",
            secret_file.to_str().unwrap(),
            "--zoho-refresh-token-stdin",
            "--zoho-accounts-url",
            "https://accounts.zoho.eu",
            "--json",
        ],
        Some(&format!("{REFRESH}\n")),
    );
    let added: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(added["tenant_id"], "cloud");

    let list: Value = serde_json::from_str(&ok(d, &["tenants", "list", "--json"], None)).unwrap();
    let t = &list[0];
    assert_eq!(t["servicedesk_auth"], "zoho-oauth");
    assert_eq!(t["zoho_client_id"], "1000.CLIENTID");
    assert_eq!(t["zoho_accounts_url"], "https://accounts.zoho.eu");

    {
        let s = store(d).await;
        let got = s.get_tenant("cloud").await.unwrap().unwrap();
        assert_eq!(got.sdp.auth, SdpAuth::ZohoOAuth);
        let o = got.sdp.oauth.unwrap();
        assert_eq!(
            (o.client_secret.expose(), o.refresh_token.expose()),
            (SECRET, REFRESH),
            "the trailing newline trimmed"
        );
    }
    let mut bytes = std::fs::read(d.join("store.db")).unwrap();
    bytes.extend(std::fs::read(d.join("store.db-wal")).unwrap_or_default());
    let raw = String::from_utf8_lossy(&bytes);
    assert!(!raw.contains(SECRET) && !raw.contains(REFRESH), "sealed at rest");

    // A new refresh token only: the rest stays.
    let new_refresh = d.join("refresh");
    std::fs::write(&new_refresh, "1000.rotated-refresh\n").unwrap();
    let out = ok(
        d,
        &[
            "tenants",
            "update",
            "cloud",
            "--zoho-refresh-token-file",
            new_refresh.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.contains("zoho_oauth"), "{out}");
    {
        let s = store(d).await;
        let o = s.get_tenant("cloud").await.unwrap().unwrap().sdp.oauth.unwrap();
        assert_eq!(o.refresh_token.expose(), "1000.rotated-refresh");
        assert_eq!(o.client_secret.expose(), SECRET);
        assert_eq!(o.client_id, "1000.CLIENTID");
        assert_eq!(o.accounts_url, "https://accounts.zoho.eu");
    }

    // Leaving OAuth needs a token; with it the OAuth credentials are gone.
    refused(
        d,
        &["tenants", "update", "cloud", "--servicedesk-auth", "zoho"],
        None,
        "needs --servicedesk-token",
    );
    ok(
        d,
        &[
            "tenants",
            "update",
            "cloud",
            "--servicedesk-auth",
            "zoho",
            "--servicedesk-token-stdin",
        ],
        Some("static-token\n"),
    );
    let s = store(d).await;
    let got = s.get_tenant("cloud").await.unwrap().unwrap();
    assert_eq!(got.sdp.auth, SdpAuth::Zoho);
    assert!(got.sdp.oauth.is_none());
    assert_eq!(got.sdp.token.expose(), "static-token");
}

#[test]
fn bad_oauth_options_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = "https://sdp.example/app/itdesk";
    let base = ["tenants", "add", "t1", "--servicedesk-url", url];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let cases: Vec<(Vec<String>, Option<&str>, &str)> = vec![
        (
            with(&[
                "--servicedesk-auth",
                "zoho-oauth",
                "--zoho-client-id",
                "c",
                "--zoho-client-secret",
                SECRET,
            ]),
            None,
            "needs --zoho-refresh-token",
        ),
        (
            with(&[
                "--servicedesk-auth",
                "zoho-oauth",
                "--zoho-refresh-token",
                REFRESH,
                "--zoho-client-secret",
                SECRET,
            ]),
            None,
            "needs --zoho-client-id",
        ),
        (
            with(&["--servicedesk-token", "tok", "--zoho-client-id", "c"]),
            None,
            "apply only with --servicedesk-auth zoho-oauth",
        ),
        (
            with(&[
                "--servicedesk-auth",
                "zoho-oauth",
                "--servicedesk-token",
                "tok",
                "--zoho-client-id",
                "c",
                "--zoho-client-secret",
                SECRET,
                "--zoho-refresh-token",
                REFRESH,
            ]),
            None,
            "takes no --servicedesk-token",
        ),
        (
            with(&[
                "--servicedesk-auth",
                "zoho-oauth",
                "--zoho-client-id",
                "c",
                "--zoho-client-secret",
                SECRET,
                "--zoho-refresh-token",
                REFRESH,
                "--zoho-accounts-url",
                "accounts.zoho.eu",
            ]),
            None,
            "invalid --zoho-accounts-url",
        ),
        (
            with(&[
                "--servicedesk-auth",
                "zoho-oauth",
                "--zoho-client-id",
                "c",
                "--zoho-client-secret-stdin",
                "--zoho-refresh-token-stdin",
            ]),
            Some("x\n"),
            "only one secret can come from stdin",
        ),
        (
            with(&[
                "--servicedesk-auth",
                "zoho-oauth",
                "--zoho-client-id",
                "c",
                "--zoho-client-secret",
                SECRET,
                "--zoho-client-secret-stdin",
                "--zoho-refresh-token",
                REFRESH,
            ]),
            Some("x\n"),
            "give only one of --zoho-client-secret",
        ),
        (
            with(&["--servicedesk-auth", "oauth2", "--servicedesk-token", "t"]),
            None,
            "expected authtoken, zoho or zoho-oauth",
        ),
    ];
    for (args, stdin, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(d, &args, stdin, want);
    }
    // The earlier kinds are unchanged.
    ok(
        d,
        &[
            "tenants",
            "add",
            "old-cloud",
            "--servicedesk-url",
            url,
            "--servicedesk-auth",
            "zoho",
            "--servicedesk-token",
            "t",
        ],
        None,
    );
    ok(
        d,
        &[
            "tenants",
            "add",
            "onprem",
            "--servicedesk-url",
            "https://sdp.local:8080",
            "--servicedesk-token",
            "k",
        ],
        None,
    );
    refused(
        d,
        &[
            "tenants",
            "add",
            "none",
            "--servicedesk-url",
            url,
            "--servicedesk-auth",
            "zoho",
        ],
        None,
        "give the SDP token",
    );
}
