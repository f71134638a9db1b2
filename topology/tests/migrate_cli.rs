//! `ticketflow migrate` and the store settings as an operator meets them:
//! what it applies, what it refuses, and `run` refusing an older schema —
//! each refusal one line on stderr and a non-zero exit.

use std::process::{Command, Output};

fn ticketflow(data_dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ticketflow"));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TICKETFLOW_DATA_DIR", data_dir)
        .env("RUST_LOG", "error");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The one-line reason of a failed command.
fn refused(o: &Output) -> String {
    assert!(!o.status.success(), "expected a refusal, got success: {}", stdout(o));
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

async fn exec(path: &std::path::Path, sql: &str) {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    db.connect().unwrap().execute_batch(sql).await.unwrap();
}

#[tokio::test]
async fn migrate_applies_once_and_refuses_a_changed_migration() {
    let dir = tempfile::tempdir().unwrap();
    let o = ticketflow(dir.path(), &[], &["migrate"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("applied 0001_init, 0002_lifecycle_retention"),
        "{}",
        stdout(&o)
    );
    let o = ticketflow(dir.path(), &[], &["migrate"]);
    assert!(stdout(&o).contains("is up to date"), "{}", stdout(&o));

    exec(
        &dir.path().join("store.db"),
        "UPDATE schema_migrations SET checksum = '0123456789abcdef' WHERE name = '0002_lifecycle_retention'",
    )
    .await;
    let err = refused(&ticketflow(dir.path(), &[], &["migrate"]));
    assert!(
        err.contains("migration 0002_lifecycle_retention was applied with checksum 0123456789ab"),
        "{err}"
    );
    let err = refused(&ticketflow(dir.path(), &[], &["tenants", "list"]));
    assert!(err.contains("0002_lifecycle_retention"), "{err}");
}

#[tokio::test]
async fn run_refuses_an_older_schema_until_migrate_brings_it_up() {
    let dir = tempfile::tempdir().unwrap();
    // The previous release's store: 0001 applied, no checksums.
    exec(
        &dir.path().join("store.db"),
        &format!(
            "{}\nCREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL);\nINSERT INTO schema_migrations VALUES ('0001_init', 1);",
            sinks::store::migrate::EMBEDDED[0].text
        ),
    )
    .await;
    let err = refused(&ticketflow(dir.path(), &[], &["tenants", "list"]));
    // Every migration after 0001 is named as not applied, then applied.
    let later: Vec<&str> = sinks::store::migrate::EMBEDDED[1..].iter().map(|m| m.name).collect();
    assert!(
        err.contains(&format!("({} not applied)", later.join(", "))) && err.contains("ticketflow migrate"),
        "{err}"
    );
    let o = ticketflow(dir.path(), &[], &["migrate"]);
    assert!(stdout(&o).contains(&format!("applied {}", later.join(", "))), "{o:?}");
    let o = ticketflow(dir.path(), &[], &["tenants", "list"]);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn bad_store_settings_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (env, expect) in [
        (vec![("SCYLLA_NODES", ",")], "names no node"),
        (
            vec![("SCYLLA_NODES", "db1"), ("SCYLLA_CONSISTENCY", "MOST")],
            "invalid SCYLLA_CONSISTENCY 'MOST'",
        ),
        (
            vec![("SCYLLA_NODES", "db1"), ("SCYLLA_KEYSPACE", "tf;drop")],
            "invalid SCYLLA_KEYSPACE",
        ),
        (
            vec![("SCYLLA_NODES", "db1"), ("SCYLLA_REPLICATION", "SimpleStrategy:0")],
            "invalid SCYLLA_REPLICATION",
        ),
        (vec![("SCYLLA_NODES", "db1"), ("SCYLLA_PASSWORD", "p")], "go together"),
        (
            vec![("SCYLLA_NODES", "db1"), ("SCYLLA_PASSWORD_FILE", "/nonexistent/pw")],
            "cannot read SCYLLA_PASSWORD_FILE",
        ),
        (vec![("TICKETFLOW_MASTER_KEY", "short")], "TICKETFLOW_MASTER_KEY"),
        (
            vec![
                ("TICKETFLOW_MASTER_KEY", &"ab".repeat(32)),
                ("TICKETFLOW_MASTER_KEY_FILE", "/k"),
            ],
            "not both",
        ),
    ] {
        let err = refused(&ticketflow(dir.path(), &env, &["migrate"]));
        assert!(err.contains(expect), "{env:?}: {err}");
        assert!(
            !err.contains(&"ab".repeat(32)),
            "the key never reaches the output: {err}"
        );
    }
}

/// A cluster that is not there: `migrate` fails with the cause, bounded by
/// the connect timeout (loopback port with nothing listening). The
/// driver's own error log line is silenced here; the reason is ours.
#[test]
fn migrate_against_an_unreachable_cluster_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nodes = format!("127.0.0.1:{port}");
    let err = refused(&ticketflow(
        dir.path(),
        &[
            ("SCYLLA_NODES", &nodes),
            ("SCYLLA_CONNECT_TIMEOUT_MS", "1000"),
            ("RUST_LOG", "off"),
        ],
        &["migrate"],
    ));
    assert!(err.contains("cannot connect to ScyllaDB"), "{err}");
}
