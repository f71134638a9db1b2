//! The embedded store's contract: tenant scoping, idempotency claims,
//! migrations, and use from two handles at once (CLI beside `run`).

use std::collections::HashMap;

use sinks::servicedesk::SdpAuth;
use sinks::store::*;

async fn store(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(&dir.path().join("store.db")).await.unwrap()
}

fn row(tenant: &str, job: &str, ticket: &str, subject: &str, at: i64) -> HistoryRow {
    HistoryRow {
        tenant_id: tenant.into(),
        job_id: job.into(),
        ticket_id: ticket.into(),
        correlation_id: format!("c-{job}"),
        status: HistoryStatus::Success,
        method: Some("llm".into()),
        error_message: None,
        failed_stage: None,
        subject: Some(subject.into()),
        description: None,
        note_text: Some("note".into()),
        note_id: Some("1".into()),
        counts: ContextCountsRow::default(),
        timings: HashMap::from([("update".to_string(), 5)]),
        received_at_ms: at - 10,
        completed_at_ms: at,
    }
}

#[tokio::test]
async fn tenants_crud_and_token_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let t = Tenant::new("acme", "http://sdp", SdpAuth::Zoho, "tok", "whsec_AAAA", "api-token-1");
    s.create_tenant(&t).await.unwrap();
    assert!(matches!(s.create_tenant(&t).await, Err(StoreError::TenantExists(_))));
    let got = s.get_tenant("acme").await.unwrap().unwrap();
    assert_eq!(got.sdp.auth, SdpAuth::Zoho);
    assert_eq!(got.webhook_secrets.current.expose(), "whsec_AAAA");
    assert_eq!(
        s.tenant_by_api_token_hash(&hash_token("api-token-1"))
            .await
            .unwrap()
            .unwrap()
            .tenant_id,
        "acme"
    );
    assert!(s.tenant_by_api_token_hash(&hash_token("nope")).await.unwrap().is_none());

    // A second handle (as the CLI opens while `run` is up) sees and changes the same data.
    let other = store(&dir).await;
    let mut t2 = other.get_tenant("acme").await.unwrap().unwrap();
    t2.requests_per_minute = 30;
    other.update_tenant(&t2).await.unwrap();
    assert_eq!(s.get_tenant("acme").await.unwrap().unwrap().requests_per_minute, 30);
    assert!(s.remove_tenant("acme").await.unwrap());
    assert!(!s.remove_tenant("acme").await.unwrap());
    assert!(s.get_tenant("acme").await.unwrap().is_none());
}

#[tokio::test]
async fn history_and_feedback_never_cross_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    s.put_history(&row("a", "j1", "100", "VPN down", 1000)).await.unwrap();
    s.put_history(&row("b", "j2", "100", "VPN down", 2000)).await.unwrap();
    assert_eq!(s.history_by_ticket("a", "100").await.unwrap().len(), 1);
    assert!(
        s.history_by_job("a", "j2").await.unwrap().is_none(),
        "tenant a must not read tenant b's job"
    );
    assert_eq!(s.recent_history("b", 10).await.unwrap()[0].job_id, "j2");
    let got = s.history_by_job("a", "j1").await.unwrap().unwrap();
    assert_eq!(got, row("a", "j1", "100", "VPN down", 1000));

    let fb = Feedback {
        feedback_id: "f1".into(),
        tenant_id: "a".into(),
        job_id: "j1".into(),
        ticket_id: "100".into(),
        rating: 4,
        helpful: Some(true),
        comment: None,
        technician: Some("tech".into()),
        created_at_ms: 5_000,
    };
    s.add_feedback(&fb).await.unwrap();
    assert_eq!(s.list_feedback("a", 0, 10_000).await.unwrap(), vec![fb]);
    assert!(s.list_feedback("b", 0, 10_000).await.unwrap().is_empty());
    assert!(s.list_feedback("a", 6_000, 10_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn idempotency_claims() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let proceed = |j: &str, c: &str| WebhookClaim::Proceed {
        job_id: j.into(),
        correlation_id: c.into(),
    };
    assert_eq!(
        s.claim_webhook("a", "w1", "j1", "c1", 60_000).await.unwrap(),
        proceed("j1", "c1")
    );
    assert_eq!(
        s.claim_webhook("a", "w1", "j2", "c2", 60_000).await.unwrap(),
        WebhookClaim::InFlight
    );
    s.confirm_webhook("a", "w1").await.unwrap();
    assert_eq!(
        s.claim_webhook("a", "w1", "j3", "c3", 60_000).await.unwrap(),
        WebhookClaim::Accepted {
            job_id: "j1".into(),
            correlation_id: "c1".into()
        }
    );
    // Same webhook-id under another tenant is a different webhook.
    assert_eq!(
        s.claim_webhook("b", "w1", "j4", "c4", 60_000).await.unwrap(),
        proceed("j4", "c4")
    );
    // A released claim (broker did not acknowledge) is retried as the same job;
    // so is a stale pending one (its writer died).
    s.release_webhook("b", "w1").await.unwrap();
    assert_eq!(
        s.claim_webhook("b", "w1", "j5", "c5", 60_000).await.unwrap(),
        proceed("j4", "c4")
    );
    assert_eq!(
        s.claim_webhook("b", "w1", "j6", "c6", 60_000).await.unwrap(),
        WebhookClaim::InFlight
    );
    assert_eq!(
        s.claim_webhook("b", "w1", "j6", "c6", -1).await.unwrap(),
        proceed("j4", "c4")
    );

    assert_eq!(s.claim_event("a", "100", "request_created", "j1").await.unwrap(), None);
    assert_eq!(
        s.claim_event("a", "100", "request_created", "j1").await.unwrap(),
        None,
        "a redelivered job is not its own duplicate"
    );
    assert_eq!(
        s.claim_event("a", "100", "request_created", "j9").await.unwrap(),
        Some("j1".into())
    );

    assert_eq!(s.note_state("a", "j1").await.unwrap(), None);
    s.note_pending("a", "j1", "100").await.unwrap();
    assert_eq!(s.note_state("a", "j1").await.unwrap(), Some(NoteState::Pending));
    s.note_posted("a", "j1", "100", "n7").await.unwrap();
    assert_eq!(
        s.note_state("a", "j1").await.unwrap(),
        Some(NoteState::Posted { note_id: "n7".into() })
    );
    assert_eq!(s.note_state("b", "j1").await.unwrap(), None);
}

/// Ingest's claims are group-committed: many at once share transactions,
/// yet each caller gets the answer it would get alone, and every answer
/// given is on disk (a store opened afresh sees it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_webhook_claims_are_committed_together_and_answered_each() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(store(&dir).await);
    // 2,000 distinct webhooks and 50 racing copies of one more, all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let s = s.clone();
        tasks.spawn(async move {
            let (w, j) = (format!("w{i}"), format!("j{i}"));
            let claim = s.claim_webhook("t", &w, &j, "c", 60_000).await.unwrap();
            assert_eq!(
                claim,
                WebhookClaim::Proceed {
                    job_id: j,
                    correlation_id: "c".into()
                }
            );
            s.confirm_webhook("t", &w).await.unwrap();
            0
        });
    }
    for i in 0..50 {
        let s = s.clone();
        tasks.spawn(async move {
            match s
                .claim_webhook("t", "race", &format!("r{i}"), "c", 60_000)
                .await
                .unwrap()
            {
                WebhookClaim::Proceed { .. } => 1,
                WebhookClaim::InFlight => 0,
                other => panic!("a racing claim got {other:?}"),
            }
        });
    }
    let mut winners = 0;
    while let Some(r) = tasks.join_next().await {
        winners += r.unwrap();
    }
    assert_eq!(winners, 1, "exactly one of 50 racing claims proceeds");
    drop(s);

    let again = store(&dir).await;
    for i in [0, 999, 1_999] {
        assert_eq!(
            again
                .claim_webhook("t", &format!("w{i}"), "other", "x", 60_000)
                .await
                .unwrap(),
            WebhookClaim::Accepted {
                job_id: format!("j{i}"),
                correlation_id: "c".into()
            },
            "confirmed claim w{i} survives reopening"
        );
    }
    assert_eq!(
        again.claim_webhook("t", "race", "late", "x", 60_000).await.unwrap(),
        WebhookClaim::InFlight,
        "the racing winner's pending claim is on disk"
    );
    // Another tenant never sees these claims.
    assert!(matches!(
        again.claim_webhook("u", "w0", "ju", "cu", 60_000).await.unwrap(),
        WebhookClaim::Proceed { job_id, .. } if job_id == "ju"
    ));
}

#[tokio::test]
async fn migrations_apply_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    assert!(
        s.migrate().await.unwrap().is_empty(),
        "open() already applied every migration"
    );
    s.ping().await.unwrap();
}
