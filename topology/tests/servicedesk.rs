//! ServiceDesk Plus in full, end to end against the SDP simulator over HTTP
//! on 127.0.0.1: deleted and closed tickets end `skipped` with their reason
//! (no note, no DLQ record), a Zoho OAuth tenant gets its notes with one
//! token refresh, and the update stage's crash recovery finds its note
//! among every page of a busy ticket's notes.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, Tenant};
use processors::headers::JobHeaders;
use processors::stages::UpdateStage;
use processors::{Stage, StageInput, StageOutput};
use schemas::{Codec, SynthesizedEnhancement, TicketUpdated};
use serde_json::json;
use sinks::servicedesk::SdpAuth;
use sinks::store::{EmbeddedStore, HistoryStatus, NoteState, Store};
use topology::config::Config;
use topology::dataflow::STAGES;
use topology::tenants::{self, AddTenant, OAuthSettings};

const ACME: Tenant = Tenant {
    id: "acme",
    auth: SdpAuth::Zoho,
    token: "zoho-acme",
};

/// Job ids on every stage's DLQ.
async fn dlq_jobs(h: &Harness) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for stage in STAGES {
        let v = h.running().ops.dlq_records(stage, 10_000).await.unwrap();
        for r in v["records"].as_array().unwrap() {
            if let Some(job) = r["envelope"]["job_id"].as_str() {
                out.insert(job.to_string(), stage.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn deleted_and_closed_tickets_end_skipped_with_their_reasons() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    h.sdp.delete_request("acme", "7001");
    h.sdp.delete_request("acme", "7005");
    h.sdp.set_request_status("acme", "7002", "Closed");
    h.sdp.set_request_status("acme", "7003", "Resolved");
    // 7004 is open (auto-created by the simulator).

    let mut jobs = Vec::new();
    let mut job_of = HashMap::new();
    for ticket in ["7001", "7002", "7003", "7004"] {
        let (status, body) = h
            .send("acme", ticket, &format!("wh-{ticket}"), "Outlook crashes on start")
            .await;
        assert_eq!(status, 202, "{body}");
        let job = body["job_id"].as_str().unwrap().to_string();
        job_of.insert(ticket, job.clone());
        jobs.push(("acme".to_string(), job));
    }
    // A webhook with the id only: the request is fetched first, and gone.
    let (status, body) = h
        .send_raw(
            "acme",
            "wh-7005",
            &json!({"event": "request_created", "request": {"id": "7005"}}).to_string(),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    job_of.insert("7005", body["job_id"].as_str().unwrap().to_string());
    jobs.push(("acme".to_string(), job_of["7005"].clone()));

    let rows = h.wait_history(&jobs, Duration::from_secs(60)).await;
    let row = |ticket: &str| &rows[&job_of[ticket]];
    for (ticket, reason) in [
        ("7001", "ticket deleted"),
        ("7005", "ticket deleted"),
        ("7002", "ticket closed in ServiceDesk Plus (status: Closed)"),
        ("7003", "ticket closed in ServiceDesk Plus (status: Resolved)"),
    ] {
        let r = row(ticket);
        assert_eq!(r.status, HistoryStatus::Skipped, "{ticket}: {r:?}");
        assert_eq!(r.error_message.as_deref(), Some(reason), "{ticket}");
        assert!(r.note_id.is_none(), "{ticket}");
    }
    assert_eq!(row("7004").status, HistoryStatus::Success, "{:?}", row("7004"));

    let noted: Vec<String> = h.sdp.notes().iter().map(|n| n.request_id.clone()).collect();
    assert_eq!(noted, vec!["7004".to_string()], "only the open ticket got a note");
    let dlq = dlq_jobs(&h).await;
    for (_, job) in &jobs {
        assert!(
            !dlq.contains_key(job),
            "job {job} reached the DLQ of {:?}",
            dlq.get(job)
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn zoho_oauth_tenant_gets_notes_with_one_token_refresh() {
    let mut h = Harness::start(&[]).await;
    h.sdp
        .add_oauth_client("1000.CLOUD", "cloud-client-secret", "1000.cloud-refresh");
    h.sdp.add_oauth_portal("cloud", "1000.CLOUD");
    h.sdp.auto_create_requests(true);
    let (secret, token) = tenants::add_with_oauth(
        h.running().store.as_ref(),
        AddTenant {
            tenant_id: "cloud".into(),
            servicedesk_url: h.sdp.base_url("cloud"),
            servicedesk_token: String::new(),
            servicedesk_auth: "zoho-oauth".into(),
            webhook_secret: None,
            requests_per_minute: 6000,
            events: vec![],
        },
        OAuthSettings {
            client_id: Some("1000.CLOUD".into()),
            client_secret: Some("cloud-client-secret".into()),
            refresh_token: Some("1000.cloud-refresh".into()),
            accounts_url: Some(h.sdp.accounts_url()),
        },
    )
    .await
    .unwrap();
    h.secrets.insert("cloud".into(), secret);
    h.tokens.insert("cloud".into(), token);

    let mut jobs = Vec::new();
    for i in 0..6 {
        let (status, body) = h
            .send(
                "cloud",
                &format!("{}", 8100 + i),
                &format!("wh-c{i}"),
                "VPN drops every hour",
            )
            .await;
        assert_eq!(status, 202, "{body}");
        jobs.push(("cloud".to_string(), body["job_id"].as_str().unwrap().to_string()));
    }
    let rows = h.wait_history(&jobs, Duration::from_secs(60)).await;
    assert!(rows.values().all(|r| r.status == HistoryStatus::Success), "{rows:?}");
    assert_eq!(h.sdp.notes().len(), 6);
    assert!(h.sdp.notes().iter().all(|n| n.auth_kind == "zoho-oauth"));
    assert_eq!(
        h.sdp.token_refreshes(),
        1,
        "six jobs in two stages share one access token"
    );

    // The token is refused (revoked, expired early): refreshed once, and
    // the job still gets its note.
    h.sdp.expire_access_tokens();
    let (status, body) = h.send("cloud", "8200", "wh-c-after", "Printer offline").await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_string();
    let rows = h
        .wait_history(&[("cloud".to_string(), job.clone())], Duration::from_secs(60))
        .await;
    assert_eq!(rows[&job].status, HistoryStatus::Success, "{:?}", rows[&job]);
    assert_eq!(h.sdp.notes().len(), 7);
    assert_eq!(h.sdp.token_refreshes(), 2, "one refresh after the refusal");
    h.stop().await;
}

/// Stage services on their own store, with tenant `acme` on the simulator.
async fn update_stage(sdp: &sinks::sim::SdpSimulator, dir: &tempfile::TempDir) -> (UpdateStage, Arc<dyn Store>) {
    let vars: HashMap<String, String> = [("TICKETFLOW_DATA_DIR", dir.path().display().to_string())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let config = Config::from_map(&vars).unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&config.store_path()).await.unwrap());
    sdp.add_portal("acme", SdpAuth::AuthToken, "key-acme");
    tenants::add(
        store.as_ref(),
        AddTenant {
            tenant_id: "acme".into(),
            servicedesk_url: sdp.base_url("acme"),
            servicedesk_token: "key-acme".into(),
            servicedesk_auth: "authtoken".into(),
            webhook_secret: None,
            requests_per_minute: 6000,
            events: vec![],
        },
    )
    .await
    .unwrap();
    let services = topology::app::services(&config, store.clone());
    (UpdateStage::new(services), store)
}

fn enhancement(job: &str, ticket: &str) -> Vec<u8> {
    let e: SynthesizedEnhancement = serde_json::from_value(json!({
        "meta": {"job_id": job, "correlation_id": format!("c-{job}"), "tenant_id": "acme", "ticket_id": ticket,
                 "event": "request_created", "webhook_id": format!("w-{job}"), "received_at_ms": sinks::now_ms()},
        "request": {"subject": "Disk full on file server"},
        "note_text": "<p>Free space on the file server</p>",
        "method": "llm", "fallback_reason": null, "model": "test/model",
        "counts": {"similar_tickets": 0, "kb_articles": 0, "ip_references": 0, "nodes_success": 4, "nodes_failed": 0},
        "timings": {}
    }))
    .unwrap();
    Codec::builtin().encode(&e).unwrap()
}

async fn run_update(stage: &UpdateStage, job: &str, ticket: &str) -> StageOutput {
    let value = enhancement(job, ticket);
    let headers = JobHeaders {
        correlation_id: format!("c-{job}"),
        tenant_id: "acme".into(),
        job_id: job.into(),
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        attempt: 2,
        replayed_from: None,
    };
    let key = format!("acme:{ticket}");
    stage
        .handle(StageInput {
            value: &value,
            key: &key,
            headers: &headers,
            attempt: 2,
            topic: "ticketflow.synthesized",
        })
        .await
        .unwrap_or_else(|f| panic!("update failed: {f:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_recovery_finds_the_note_on_the_third_page_and_posts_no_second() {
    let sdp = sinks::sim::SdpSimulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (stage, store) = update_stage(&sdp, &dir).await;
    sdp.add_request(
        "acme",
        "9000",
        json!({"subject": "Disk full", "status": {"name": "Open"}}),
    );
    // The crash: an earlier attempt marked the job pending and its note
    // reached SDP, then the process died before recording it. Technicians
    // wrote 220 notes before it and 29 after: the marker is note 221 of
    // 250, on the third page of 100.
    for i in 0..220 {
        sdp.add_existing_note("acme", "9000", &format!("technician note {i}"));
    }
    let marker_note = sdp.add_existing_note(
        "acme",
        "9000",
        &format!(
            "<p>earlier</p><br><br><small>{}</small>",
            processors::stages::job_marker("job-crashed")
        ),
    );
    for i in 0..29 {
        sdp.add_existing_note("acme", "9000", &format!("later note {i}"));
    }
    store.note_pending("acme", "job-crashed", "9000").await.unwrap();

    let out = run_update(&stage, "job-crashed", "9000").await;
    let StageOutput::Forward(bytes) = out else {
        panic!("expected the job to go on to record")
    };
    let updated: TicketUpdated = Codec::builtin().decode(&bytes).unwrap();
    assert!(updated.already_posted);
    assert_eq!(updated.note_id.as_deref(), Some(marker_note.as_str()));
    assert!(sdp.notes().is_empty(), "no second note posted");
    assert_eq!(sdp.notes_on("acme", "9000").len(), 250);
    assert_eq!(
        store.note_state("acme", "job-crashed").await.unwrap(),
        Some(NoteState::Posted { note_id: marker_note })
    );

    // The same crash where the note never reached SDP: every page is read,
    // the marker is not there, so the note is posted (once).
    store.note_pending("acme", "job-lost", "9000").await.unwrap();
    let StageOutput::Forward(bytes) = run_update(&stage, "job-lost", "9000").await else {
        panic!("expected the job to go on to record")
    };
    let updated: TicketUpdated = Codec::builtin().decode(&bytes).unwrap();
    assert!(!updated.already_posted);
    assert_eq!(sdp.notes().len(), 1);
    assert_eq!(sdp.notes_on("acme", "9000").len(), 251);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_deleted_before_the_note_ends_skipped() {
    let sdp = sinks::sim::SdpSimulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (stage, store) = update_stage(&sdp, &dir).await;
    sdp.add_request("acme", "9100", json!({"subject": "Disk full"}));
    sdp.delete_request("acme", "9100");
    let out = run_update(&stage, "job-gone", "9100").await;
    assert!(matches!(out, StageOutput::Done), "the job ends in update");
    let row = store
        .history_by_job("acme", "job-gone")
        .await
        .unwrap()
        .expect("history row");
    assert_eq!(row.status, HistoryStatus::Skipped);
    assert_eq!(row.error_message.as_deref(), Some("ticket deleted"));
    assert!(sdp.notes().is_empty());

    // Deleted while a crashed attempt's note search was pending: skipped too.
    store.note_pending("acme", "job-gone-2", "9100").await.unwrap();
    assert!(matches!(
        run_update(&stage, "job-gone-2", "9100").await,
        StageOutput::Done
    ));
    let row = store
        .history_by_job("acme", "job-gone-2")
        .await
        .unwrap()
        .expect("history row");
    assert_eq!(
        (row.status, row.error_message.as_deref()),
        (HistoryStatus::Skipped, Some("ticket deleted"))
    );
}
