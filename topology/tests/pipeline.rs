//! End to end through the embedded broker and all five stages.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Harness, Tenant};
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use schemas::{Codec, WebhookReceived, SINGLE_OBJECT_MARKER};
use sinks::servicedesk::SdpAuth;
use sinks::sim::{LlmFault, SdpFault};
use sinks::store::HistoryStatus;

const TENANTS: [Tenant; 3] = [
    Tenant {
        id: "acme",
        auth: SdpAuth::Zoho,
        token: "zoho-acme",
    },
    Tenant {
        id: "globex",
        auth: SdpAuth::AuthToken,
        token: "key-globex",
    },
    Tenant {
        id: "initech",
        auth: SdpAuth::Zoho,
        token: "zoho-initech",
    },
];

/// Sends `n` webhooks round-robin over the tenants, 16 at a time; returns
/// (tenant, ticket, webhook id, status, body).
async fn send_many(h: &Harness, n: usize, id_prefix: &str) -> Vec<(String, String, String, u16, serde_json::Value)> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let tenant = TENANTS[i % 3].id.to_string();
            let ticket = format!("{}", 5000 + i);
            let wid = format!("{id_prefix}-{i}");
            let (status, body) = h
                .send(
                    &tenant,
                    &ticket,
                    &wid,
                    &format!("Laptop {i} cannot print to floor printer"),
                )
                .await;
            (tenant, ticket, wid, status, body)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn two_hundred_webhooks_three_tenants_exactly_one_note_each() {
    let mut h = Harness::start(&[]).await;
    for t in &TENANTS {
        h.add_tenant(t).await;
    }
    let sent = send_many(&h, 200, "msg").await;
    assert!(
        sent.iter().all(|s| s.3 == 202),
        "all accepted: {:?}",
        sent.iter().find(|s| s.3 != 202)
    );
    let jobs: Vec<(String, String)> = sent
        .iter()
        .map(|s| (s.0.clone(), s.4["job_id"].as_str().unwrap().to_string()))
        .collect();
    let rows = h.wait_history(&jobs, Duration::from_secs(180)).await;
    assert!(
        rows.values().all(|r| r.status == HistoryStatus::Success),
        "{:?}",
        rows.values().find(|r| r.status != HistoryStatus::Success)
    );

    let notes = h.sdp.notes();
    assert_eq!(notes.len(), 200);
    let want: HashMap<&str, &Tenant> = TENANTS.iter().map(|t| (t.id, t)).collect();
    let mut seen = HashSet::new();
    for (tenant, ticket, _, _, body) in &sent {
        let job = body["job_id"].as_str().unwrap();
        let matching: Vec<_> = notes.iter().filter(|n| n.description.contains(job)).collect();
        assert_eq!(matching.len(), 1, "one note for job {job}");
        let n = matching[0];
        assert_eq!(n.request_id, *ticket, "right ticket");
        assert_eq!(n.portal, *tenant, "right tenant's portal");
        let t = want[tenant.as_str()];
        assert_eq!(n.token, t.token, "right tenant credentials");
        assert_eq!(n.auth_kind, t.auth.as_str());
        assert!(n.content_type.starts_with("application/x-www-form-urlencoded"));
        assert!(seen.insert(job.to_string()));
    }

    // The same 200 again (same webhook-ids): the first jobs' ids, no new note.
    let again = send_many(&h, 200, "msg").await;
    for (a, b) in again.iter().map(|a| (a, sent.iter().find(|s| s.2 == a.2).unwrap())) {
        assert_eq!(a.3, 202);
        assert_eq!(
            a.4["job_id"], b.4["job_id"],
            "a repeated webhook-id returns the first job's ids"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.sdp.notes().len(), 200, "no note for repeated webhook-ids");

    // Records on the webhooks topic are single-object Avro with every header.
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &h.running().bootstrap)
        .set("group.id", "test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["ticketflow.webhooks"]).unwrap();
    let mut checked = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while checked < 20 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            let v = m.payload().unwrap();
            assert_eq!(v[..2], SINGLE_OBJECT_MARKER);
            assert_eq!(v[2..10], Codec::builtin().fingerprint_of::<WebhookReceived>());
            let headers = m.headers().unwrap();
            for name in ["correlation_id", "tenant_id", "job_id", "traceparent", "attempt"] {
                assert!(
                    headers
                        .iter()
                        .any(|hd| hd.key == name && hd.value.is_some_and(|v| !v.is_empty())),
                    "header {name}"
                );
            }
            let w: WebhookReceived = Codec::builtin().decode(v).unwrap();
            assert_eq!(String::from_utf8_lossy(m.key().unwrap()), w.meta.key());
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn llm_failures_fall_back_and_history_says_so() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&TENANTS[0]).await;
    for (i, fault) in [
        LlmFault::Status {
            status: 503,
            retry_after_secs: Some(1),
        },
        LlmFault::ErrorInside200,
    ]
    .into_iter()
    .enumerate()
    {
        h.llm.set_fault(Some(fault));
        let (status, body) = h
            .send(
                "acme",
                &format!("70{i}"),
                &format!("llm-{i}"),
                "Email bounces for external domains",
            )
            .await;
        assert_eq!(status, 202);
        let job = body["job_id"].as_str().unwrap().to_string();
        let rows = h
            .wait_history(&[("acme".into(), job.clone())], Duration::from_secs(60))
            .await;
        let row = &rows[&job];
        assert_eq!(row.status, HistoryStatus::Fallback, "{row:?}");
        assert_eq!(row.method.as_deref(), Some("fallback"));
        let reason = row.error_message.as_deref().unwrap();
        if i == 0 {
            // Retried through every tier first (Retry-After honoured).
            assert!(reason.contains("503") && reason.contains("attempt 4 of 4"), "{reason}");
            assert_eq!(h.llm.requests(), 4);
        } else {
            // Four failures above plus this one open the breaker (5): the
            // retry falls back at once, quoting the last LLM error.
            assert!(reason.contains("inside HTTP 200"), "{reason}");
        }
        let note = h
            .sdp
            .notes()
            .into_iter()
            .find(|n| n.description.contains(&job))
            .expect("fallback note posted");
        assert!(note.description.contains("automatic summary unavailable"));
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn disabled_llm_makes_no_request() {
    let mut h = Harness::start(&[("DISABLE_LLM_SYNTHESIS", "true")]).await;
    h.add_tenant(&TENANTS[1]).await;
    let (status, body) = h.send("globex", "801", "off-1", "Wi-Fi drops in meeting room").await;
    assert_eq!(status, 202);
    let job = body["job_id"].as_str().unwrap().to_string();
    let rows = h
        .wait_history(&[("globex".into(), job.clone())], Duration::from_secs(60))
        .await;
    assert_eq!(rows[&job].status, HistoryStatus::Fallback);
    assert!(rows[&job]
        .error_message
        .as_deref()
        .unwrap()
        .contains("DISABLE_LLM_SYNTHESIS"));
    assert_eq!(h.llm.requests(), 0, "no LLM request at all");
    assert_eq!(h.sdp.note_count(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn sdp_401_for_one_tenant_dead_letters_its_jobs_only() {
    let mut h = Harness::start(&[]).await;
    for t in &TENANTS {
        h.add_tenant(t).await;
    }
    h.sdp.set_fault("globex", Some(SdpFault::Unauthorized));
    let sent = send_many(&h, 30, "auth").await;
    assert!(sent.iter().all(|s| s.3 == 202));
    let jobs: Vec<(String, String)> = sent
        .iter()
        .map(|s| (s.0.clone(), s.4["job_id"].as_str().unwrap().to_string()))
        .collect();
    let rows = h.wait_history(&jobs, Duration::from_secs(120)).await;
    for (tenant, job) in &jobs {
        let row = &rows[job];
        if tenant == "globex" {
            assert_eq!(row.status, HistoryStatus::Failed, "{row:?}");
            assert_eq!(row.failed_stage.as_deref(), Some("update"));
            assert!(
                row.error_message.as_deref().unwrap().contains("401"),
                "{:?}",
                row.error_message
            );
        } else {
            assert_eq!(row.status, HistoryStatus::Success);
        }
    }
    assert_eq!(h.sdp.note_count(), 20, "the other tenants' notes flowed");
    assert!(h.sdp.notes().iter().all(|n| n.portal != "globex"));

    // The jobs are on ticketflow.update.dlq, visible to operators.
    let dlq = h.running().ops.dlq_records("update", 100).await.unwrap();
    assert_eq!(dlq["count"], 10, "{dlq}");
    assert!(dlq["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["envelope"]["tenant_id"] == "globex" && r["envelope"]["error_class"] == "permanent"));

    // `dlq show` reads one record by partition and offset.
    let first = &dlq["records"][0];
    let (p, o) = (
        first["partition"].as_i64().unwrap() as i32,
        first["offset"].as_i64().unwrap(),
    );
    let one = h
        .running()
        .ops
        .dlq_record("update", p, o)
        .await
        .unwrap()
        .expect("record");
    assert_eq!(one["envelope"]["job_id"], first["envelope"]["job_id"]);
    assert!(h
        .running()
        .ops
        .dlq_record("update", p, o + 1000)
        .await
        .unwrap()
        .is_none());
    assert!(h.running().ops.dlq_record("update", 99, 0).await.unwrap().is_none());

    // Fix the credentials and retry the DLQ: the notes arrive, history turns to success.
    h.sdp.set_fault("globex", None);
    let retried = h.running().ops.dlq_retry_records("update", None).await.unwrap();
    assert_eq!(retried["resent"], 10);
    let globex_jobs: Vec<(String, String)> = jobs.iter().filter(|(t, _)| t == "globex").cloned().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = h.wait_history(&globex_jobs, Duration::from_secs(5)).await;
        if rows.values().all(|r| r.status == HistoryStatus::Success) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retried jobs did not succeed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(h.sdp.note_count(), 30);
    // Retrying "everything not retried before" again re-sends nothing.
    assert_eq!(
        h.running().ops.dlq_retry_records("update", None).await.unwrap()["resent"],
        0
    );
    h.stop().await;
}

/// Context search end to end: a ticket processed earlier is found again as
/// the best similar ticket (with how it was resolved: the start of the note
/// it got); an article and an asset imported through the CLI's import code
/// appear in the gathered context, the asset found by the host name the
/// ticket mentions; history carries the old system's per-source timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn similar_tickets_imported_articles_and_inventory_reach_the_context() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&TENANTS[0]).await;
    let kb = h.dir.path().join("kb.jsonl");
    std::fs::write(
        &kb,
        concat!(
            r#"{"id": "ACME-7", "title": "Outlook crashes opening a shared calendar", "content": "Remove and re-add the shared calendar, then rebuild the profile.", "url": "https://wiki.acme.test/7"}"#,
            "\n",
            r#"{"id": "ACME-8", "title": "Badge reader offline", "content": "Power-cycle the door controller."}"#,
            "\n"
        ),
    )
    .unwrap();
    let store = h.running().store.clone();
    assert_eq!(
        topology::import::import_articles(store.as_ref(), "acme", &kb)
            .await
            .unwrap(),
        2
    );
    let inventory = h.dir.path().join("assets.csv");
    std::fs::write(
        &inventory,
        "name,ip,hostname,type,owner,site\nEX01,10.9.0.25,ex01.corp.acme.test,Mail Server,messaging,HQ\n",
    )
    .unwrap();
    assert_eq!(
        topology::import::import_assets(store.as_ref(), "acme", &inventory)
            .await
            .unwrap(),
        1
    );

    let tickets = [
        (
            "9001",
            "Outlook crashes when opening the shared team calendar",
            "Outlook 365 closes as soon as the Sales shared calendar is opened; safe mode works.",
        ),
        (
            "9002",
            "Printer on 2nd floor jams",
            "The LaserJet reports a paper jam in tray 2.",
        ),
        (
            "9003",
            "VPN disconnects for home workers",
            "GlobalProtect drops every ten minutes.",
        ),
        (
            "9010",
            "Outlook closes when I open our shared calendar",
            "Since this morning Outlook crashes opening the team calendar; mail is on ex01.corp.acme.test.",
        ),
    ];
    for (id, subject, description) in tickets {
        h.sdp.add_request(
            "acme",
            id,
            serde_json::json!({"subject": subject, "description": description, "status": {"name": "Open"},
                "priority": {"name": "High"}}),
        );
    }
    let mut jobs = HashMap::new();
    for (i, (id, subject, description)) in tickets.iter().enumerate() {
        let body = serde_json::json!({"event": "request_created", "request": {"id": id, "subject": subject,
            "description": description, "requester": {"name": "Test", "email": "t@example.test"}}})
        .to_string();
        let (status, answer) = h.send_raw("acme", &format!("ctx-{i}"), &body).await;
        assert_eq!(status, 202, "{answer}");
        let job = answer["job_id"].as_str().unwrap().to_string();
        // The last one only after the others are recorded (and indexed).
        h.wait_history(&[("acme".into(), job.clone())], Duration::from_secs(60))
            .await;
        jobs.insert(*id, job);
    }
    let first = store.history_by_job("acme", &jobs["9001"]).await.unwrap().unwrap();
    let last = store.history_by_job("acme", &jobs["9010"]).await.unwrap().unwrap();
    assert_eq!(last.status, HistoryStatus::Success, "{last:?}");
    for name in ["ticket_search_time_ms", "kb_search_time_ms", "ip_lookup_time_ms"] {
        assert!(last.timings.contains_key(name), "{name} in {:?}", last.timings);
    }

    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &h.running().bootstrap)
        .set("group.id", "test-context-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["ticketflow.context"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut gathered = None;
    while gathered.is_none() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            let g: schemas::GatheredContext = Codec::builtin().decode(m.payload().unwrap()).unwrap();
            if g.meta.job_id == jobs["9010"] {
                gathered = Some(g);
            }
        }
    }
    let g = gathered.expect("the context record of ticket 9010");
    let best = &g.similar_tickets[0];
    assert_eq!(best.ticket_id, "9001", "{:?}", g.similar_tickets);
    assert_eq!(best.subject.as_deref(), Some(tickets[0].1));
    // Resolved with its note's prose: the LLM's summary, cause and steps,
    // without the note's heading and its own context sections.
    let resolution = best.resolution.as_deref().expect("a resolution");
    let note_text = sinks::store::search::plain_text(first.note_text.as_deref().unwrap());
    assert!(resolution.starts_with("Summary:"), "{resolution}");
    assert!(
        note_text.contains(resolution.trim_end_matches('…')),
        "{resolution} is part of the note {note_text}"
    );
    assert!(
        !resolution.contains("Ticketflow summary") && !resolution.contains("Similar tickets"),
        "{resolution}"
    );
    assert!(g.similar_tickets.iter().all(|s| s.ticket_id != "9010"), "not itself");
    let article = g
        .kb_articles
        .iter()
        .find(|a| a.id == "ACME-7")
        .unwrap_or_else(|| panic!("imported article in {:?}", g.kb_articles));
    assert_eq!(article.source, "imported");
    assert_eq!(article.url.as_deref(), Some("https://wiki.acme.test/7"));
    assert!(g.kb_articles.iter().all(|a| a.id != "ACME-8"), "{:?}", g.kb_articles);
    assert_eq!(g.hostnames_found, ["ex01.corp.acme.test"]);
    let asset = g
        .ip_references
        .iter()
        .find(|r| r.asset_name == "EX01")
        .unwrap_or_else(|| panic!("inventory asset in {:?}", g.ip_references));
    assert_eq!(asset.source, "inventory");
    assert_eq!(asset.ip, "10.9.0.25");
    assert_eq!(asset.hostname.as_deref(), Some("ex01.corp.acme.test"));
    assert_eq!(last.counts.ip_references, 1);
    h.stop().await;
}
