//! What only the embedded store has: its migrations in a file, several
//! handles (processes) on one file, secrets sealed in the file itself.

use std::sync::Arc;

use sinks::servicedesk::SdpAuth;
use sinks::store::*;

async fn raw(path: &std::path::Path, sql: &str) -> Vec<String> {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    let conn = db.connect().unwrap();
    let mut rows = conn.query(sql, ()).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().await.unwrap() {
        out.push(r.get::<String>(0).unwrap_or_default());
    }
    out
}

async fn raw_exec(path: &std::path::Path, sql: &str) {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    db.connect().unwrap().execute_batch(sql).await.unwrap();
}

#[tokio::test]
async fn migrations_are_recorded_with_checksums_and_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let s = EmbeddedStore::open(&path).await.unwrap();
    s.ping().await.unwrap();
    drop(s);
    assert!(
        EmbeddedStore::migrate_file(&path).await.unwrap().is_empty(),
        "a new store is complete"
    );
    let recorded = raw(
        &path,
        "SELECT name || ' ' || checksum FROM schema_migrations ORDER BY name",
    )
    .await;
    let expected: Vec<String> = migrate::EMBEDDED
        .iter()
        .map(|m| format!("{} {}", m.name, m.checksum()))
        .collect();
    assert_eq!(recorded, expected);
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(EmbeddedStore::open(&path).await.unwrap());
    raw_exec(
        &path,
        "UPDATE schema_migrations SET checksum = 'deadbeef' WHERE name = '0001_init'",
    )
    .await;
    let e = EmbeddedStore::migrate_file(&path).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("migration 0001_init was applied with checksum deadbeef"),
        "{e}"
    );
    let e = EmbeddedStore::open(&path).await.err().expect("run refuses it too");
    assert!(e.to_string().contains("0001_init"), "{e}");
}

#[tokio::test]
async fn run_refuses_an_older_schema_until_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    // A store as the previous release left it: 0001 only, no checksums.
    raw_exec(
        &path,
        &format!(
            "{}\nCREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL);\nINSERT INTO schema_migrations VALUES ('0001_init', 1);",
            migrate::EMBEDDED[0].text
        ),
    )
    .await;
    let e = EmbeddedStore::open(&path).await.err().expect("older schema refused");
    // Every migration after 0001 is named as not applied, then applied.
    let later: Vec<&str> = migrate::EMBEDDED[1..].iter().map(|m| m.name).collect();
    assert!(
        e.to_string().contains(&format!("({} not applied)", later.join(", "))),
        "{e}"
    );
    assert!(e.to_string().contains("ticketflow migrate"), "{e}");
    assert_eq!(EmbeddedStore::migrate_file(&path).await.unwrap(), later);
    let s = EmbeddedStore::open(&path).await.unwrap();
    s.ping().await.unwrap();
    let sums = raw(&path, "SELECT checksum FROM schema_migrations WHERE name = '0001_init'").await;
    assert_eq!(sums, [migrate::EMBEDDED[0].checksum()], "the old row got its checksum");
}

#[tokio::test]
async fn a_store_migrated_by_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(EmbeddedStore::open(&path).await.unwrap());
    raw_exec(&path, "INSERT INTO schema_migrations VALUES ('0099_future', 1, 'x')").await;
    let e = EmbeddedStore::open(&path).await.err().unwrap();
    assert!(
        e.to_string().contains("0099_future") && e.to_string().contains("newer"),
        "{e}"
    );
}

/// Two handles on one file (two processes on one host, or the CLI beside
/// `run`): writes of either are seen by the other, and a claim raced from
/// both has one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_share_one_file_and_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (a, b) = tokio::join!(EmbeddedStore::open(&path), EmbeddedStore::open(&path));
    let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    a.create_tenant(&Tenant::new(
        "acme",
        "http://sdp",
        SdpAuth::Zoho,
        "tok",
        "whsec_AAAA",
        "api-1",
    ))
    .await
    .unwrap();
    let mut t = b.get_tenant("acme").await.unwrap().unwrap();
    t.requests_per_minute = 30;
    b.update_tenant(&t).await.unwrap();
    assert_eq!(a.get_tenant("acme").await.unwrap().unwrap().requests_per_minute, 30);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let w = format!("w{}", i / 2);
            matches!(
                s.claim_webhook("acme", &w, &format!("j{i}"), "c", 60_000)
                    .await
                    .unwrap(),
                WebhookClaim::Proceed { .. }
            )
        });
    }
    let mut winners = 0;
    while let Some(r) = tasks.join_next().await {
        winners += r.unwrap() as usize;
    }
    assert_eq!(
        winners, 100,
        "each of 100 webhook-ids claimed from both handles has one winner"
    );
}

#[tokio::test]
async fn sealed_secrets_are_not_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let options = StoreOptions {
        sealer: Arc::new(Sealer::from_key_text(key).unwrap()),
        ..Default::default()
    };
    let s = EmbeddedStore::open_with(&path, options).await.unwrap();
    s.create_tenant(&Tenant::new(
        "acme",
        "http://sdp",
        SdpAuth::Zoho,
        "sdp-tok-123",
        "whsec_AAAA",
        "api-1",
    ))
    .await
    .unwrap();
    let stored = raw(
        &path,
        "SELECT sdp_token FROM tenants UNION ALL SELECT webhook_secret FROM tenants",
    )
    .await;
    assert!(stored.iter().all(|v| is_sealed(v)), "{stored:?}");
    assert!(stored
        .iter()
        .all(|v| !v.contains("sdp-tok-123") && !v.contains("whsec_AAAA")));
    drop(s);
    // Without the key the secrets cannot be read: a clear error, not garbage.
    let plain = EmbeddedStore::open(&path).await.unwrap();
    let e = plain.get_tenant("acme").await.unwrap_err();
    assert!(e.to_string().contains("TICKETFLOW_MASTER_KEY is not set"), "{e}");
    let wrong = StoreOptions {
        sealer: Arc::new(Sealer::from_key_text(&"ab".repeat(32)).unwrap()),
        ..Default::default()
    };
    let e = EmbeddedStore::open_with(&path, wrong)
        .await
        .unwrap()
        .get_tenant("acme")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not decrypt"), "{e}");
}

#[tokio::test]
async fn the_sweep_deletes_only_expired_claims() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let options = StoreOptions {
        retention: Retention {
            webhook_claims: std::time::Duration::from_secs(3600),
            event_claims: std::time::Duration::from_secs(3600),
            note_records: std::time::Duration::from_secs(3600),
        },
        ..Default::default()
    };
    let s = EmbeddedStore::open_with(&path, options).await.unwrap();
    s.claim_webhook("a", "fresh", "j1", "c", 60_000).await.unwrap();
    s.claim_event("a", "1", "request_created", "j1").await.unwrap();
    s.note_pending("a", "j1", "1").await.unwrap();
    let two_hours_ago = sinks::now_ms() - 7_200_000;
    raw_exec(
        &path,
        &format!(
            "INSERT INTO webhook_dedup VALUES ('a', 'old', 'j0', 'c', 'accepted', {two_hours_ago});
             INSERT INTO event_dedup VALUES ('a', '0', 'request_created', 'j0', {two_hours_ago});
             INSERT INTO note_idempotency VALUES ('a', 'j0', '0', 'posted', 'n0', {two_hours_ago});"
        ),
    )
    .await;
    assert_eq!(
        s.note_state("a", "j0").await.unwrap(),
        None,
        "expired rows are ignored before the sweep"
    );
    // (The background sweep, which starts with the store, may have taken
    // some of them already.)
    assert!(s.sweep_expired().await.unwrap() <= 3);
    let left = raw(
        &path,
        "SELECT webhook_id FROM webhook_dedup UNION ALL SELECT job_id FROM event_dedup UNION ALL SELECT job_id FROM note_idempotency",
    )
    .await;
    assert_eq!(left, ["fresh", "j1", "j1"], "only the expired rows went");
    assert_eq!(s.sweep_expired().await.unwrap(), 0);
    assert_eq!(s.note_state("a", "j1").await.unwrap(), Some(NoteState::Pending));
    assert!(matches!(
        s.claim_webhook("a", "fresh", "j9", "c", 60_000).await.unwrap(),
        WebhookClaim::InFlight
    ));
}
