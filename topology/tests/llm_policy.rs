//! The LLM policy end to end, against the simulators over HTTP with the
//! real stages: transient failures go through the retry tiers and the
//! fallback note comes only after the last attempt; rejections fall back at
//! once and are counted; a model list falls back model by model; a huge
//! ticket is cut to the prompt budget; history records prompt version,
//! model, tokens, cost and phase timings.

mod common;

use std::time::Duration;

use common::{Harness, Tenant};
use serde_json::json;
use sinks::servicedesk::SdpAuth;
use sinks::sim::{LlmFault, ModelBehaviour};
use sinks::store::{HistoryRow, HistoryStatus};

const ACME: Tenant = Tenant {
    id: "acme",
    auth: SdpAuth::Zoho,
    token: "zoho-acme",
};

/// Sends one webhook and waits for its history row; returns it with the
/// job's note (if any).
async fn one_job(h: &Harness, ticket: &str, subject: &str) -> (HistoryRow, Option<String>) {
    let (status, body) = h.send("acme", ticket, &format!("wh-{ticket}"), subject).await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_string();
    let rows = h
        .wait_history(&[("acme".into(), job.clone())], Duration::from_secs(120))
        .await;
    let note = h
        .sdp
        .notes()
        .into_iter()
        .filter(|n| n.description.contains(&job))
        .map(|n| n.description)
        .collect::<Vec<_>>();
    assert!(note.len() <= 1, "one note per job: {note:?}");
    (rows[&job].clone(), note.into_iter().next())
}

/// A harness without the lag monitor: these tests read no lag, and a lag
/// sample still blocking at shutdown held a test's runtime for minutes.
async fn start(extra: &[(&str, &str)]) -> Harness {
    let mut vars = vec![("TICKETFLOW_LAG_MONITOR", "off")];
    vars.extend_from_slice(extra);
    Harness::start(&vars).await
}

fn assert_context_sections(note: &str) {
    for section in ["Similar tickets", "Knowledge-base articles", "Affected assets"] {
        assert!(
            note.contains(&format!("<p><b>{section}</b></p>")),
            "{section} in {note}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn llm_503_once_then_ok_gives_an_llm_note_on_the_second_attempt() {
    let mut h = start(&[]).await;
    h.add_tenant(&ACME).await;
    h.llm.fail_next(
        1,
        LlmFault::Status {
            status: 503,
            retry_after_secs: None,
        },
    );
    let (row, note) = one_job(&h, "9001", "Outlook keeps asking for the password").await;
    assert_eq!(row.status, HistoryStatus::Success, "{row:?}");
    assert_eq!(row.method.as_deref(), Some("llm"));
    assert_eq!(h.llm.requests(), 2, "the first attempt failed, the retry answered");
    let note = note.expect("note posted");
    assert!(note.contains("<p><b>Ticketflow summary</b></p>"), "{note}");
    // The simulator's summary quotes the subject it was sent (HTML-escaped).
    let subject = row.subject.clone().unwrap();
    assert!(
        note.contains(&format!(
            "<p><b>Summary:</b> The requester reports &quot;{subject}&quot;.</p>"
        )),
        "{note}"
    );
    assert!(note.contains("<p><b>Likely cause:</b> "), "{note}");
    assert!(note.contains("<p><b>Suggested steps:</b></p><ol><li>"), "{note}");
    assert!(note.contains("on attempt 2"), "attempts visible: {note}");
    assert_context_sections(&note);
    assert!(!note.contains("automatic summary unavailable"));
    // What the call used, per history row.
    assert_eq!(
        row.llm.prompt_version.as_deref(),
        Some(processors::stages::PROMPT_VERSION)
    );
    assert_eq!(row.llm.model.as_deref(), Some("openai/gpt-4o-mini"));
    assert!(row.llm.tokens_in.unwrap() > 100, "{:?}", row.llm);
    assert!(row.llm.tokens_out.unwrap() > 0, "{:?}", row.llm);
    assert!(row.llm.cost_usd.unwrap() > 0.0, "{:?}", row.llm);
    for phase in ["synthesize.prompt", "synthesize.llm", "synthesize.render", "synthesize"] {
        assert!(row.timings.contains_key(phase), "{phase} in {:?}", row.timings);
    }
    // The store gives the same back through the history API's reader.
    let again = h
        .running()
        .store
        .history_by_job("acme", &row.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.llm, row.llm);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn llm_401_falls_back_at_once_and_is_counted() {
    let mut h = start(&[("LLM_MODEL", "sim/key-rejected")]).await;
    h.add_tenant(&ACME).await;
    let counter = || {
        sinks::metrics::metrics()
            .llm_rejected
            .with_label_values(&["401", "sim/key-rejected"])
            .get()
    };
    let before = counter();
    h.llm.set_fault(Some(LlmFault::Status {
        status: 401,
        retry_after_secs: None,
    }));
    let (row, note) = one_job(&h, "9002", "Shared drive S: missing").await;
    assert_eq!(row.status, HistoryStatus::Fallback, "{row:?}");
    let reason = row.error_message.as_deref().unwrap();
    assert!(reason.contains("HTTP 401"), "{reason}");
    assert!(!reason.contains("attempt"), "no retry: {reason}");
    assert_eq!(h.llm.requests(), 1, "a rejection is never retried");
    assert_eq!(counter() - before, 1, "ticketflow_llm_rejected_total{{status=\"401\"}}");
    let note = note.expect("fallback note posted");
    assert!(
        note.contains("automatic summary unavailable: LLM answered HTTP 401"),
        "{note}"
    );
    assert_context_sections(&note);
    assert!(!note.contains("Suggested steps"));
    assert_eq!(
        row.llm.prompt_version.as_deref(),
        Some(processors::stages::PROMPT_VERSION)
    );
    assert_eq!(row.llm.model, None);
    // The exported metric is what the alert reads.
    let text = sinks::metrics::metrics().render();
    assert!(
        text.contains(r#"ticketflow_llm_rejected_total{model="sim/key-rejected",status="401"}"#),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_model_unavailable_the_second_answers_and_history_says_which() {
    let mut h = start(&[("LLM_MODELS", "sim/withdrawn,sim/standby")]).await;
    h.add_tenant(&ACME).await;
    h.llm.set_model("sim/withdrawn", Some(ModelBehaviour::Unavailable));
    let (row, note) = one_job(&h, "9003", "Teams camera not detected").await;
    assert_eq!(row.status, HistoryStatus::Success, "{row:?}");
    assert_eq!(row.llm.model.as_deref(), Some("sim/standby"));
    let asked: Vec<String> = h.llm.received().into_iter().map(|r| r.model).collect();
    assert_eq!(asked, ["sim/withdrawn", "sim/standby"], "both in one attempt");
    assert!(note.unwrap().contains("Written by sim/standby (prompt v1)"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_failures_on_every_attempt_fall_back_only_after_the_last() {
    // Tiers 200ms,400ms,800ms: four attempts. A breaker that does not open
    // keeps every attempt going to the LLM.
    let mut h = start(&[("CIRCUIT_BREAKER_THRESHOLD", "100")]).await;
    h.add_tenant(&ACME).await;
    h.llm.set_fault(Some(LlmFault::Status {
        status: 503,
        retry_after_secs: None,
    }));
    let (row, note) = one_job(&h, "9004", "Laptop fan loud").await;
    assert_eq!(row.status, HistoryStatus::Fallback, "{row:?}");
    assert_eq!(h.llm.requests(), 4, "first try plus three retry tiers");
    let reason = row.error_message.as_deref().unwrap();
    assert!(
        reason.contains("HTTP 503") && reason.contains("attempt 4 of 4"),
        "{reason}"
    );
    assert_eq!(h.sdp.note_count(), 1, "one note, the fallback after the last attempt");
    assert!(note.unwrap().contains("automatic summary unavailable"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_megabyte_ticket_is_cut_to_the_prompt_budget_and_answered() {
    let mut h = start(&[("LLM_MAX_PROMPT_TOKENS", "2000")]).await;
    h.add_tenant(&ACME).await;
    let huge = "Event log: the sync client restarted unexpectedly. ".repeat(2 * 1024 * 1024 / 51);
    assert!(huge.len() >= 2_000_000);
    h.sdp.add_request(
        "acme",
        "9005",
        json!({"id": "9005", "subject": "OneDrive sync loops", "description": huge,
               "status": {"name": "Open"}, "priority": {"name": "High"}}),
    );
    let (row, note) = one_job(&h, "9005", "OneDrive sync loops").await;
    assert_eq!(row.status, HistoryStatus::Success, "{row:?}");
    let sent = h.llm.received();
    assert_eq!(sent.len(), 1);
    // Estimated at a token per three bytes: 2000 tokens is 6000 bytes of
    // prompt; the request adds JSON framing around it.
    assert!(sent[0].prompt_chars <= 6000, "{:?}", sent[0]);
    assert!(sent[0].body_bytes < 8000, "{:?}", sent[0]);
    let prompt = h.llm.last_prompt().unwrap();
    assert!(prompt.contains("Subject: OneDrive sync loops"), "subject kept");
    assert!(
        prompt.contains("Event log: the sync client restarted"),
        "description head kept"
    );
    assert!(
        prompt.contains("this prompt was shortened"),
        "the prompt says it was cut"
    );
    assert!(note.unwrap().contains("The ticket was shortened for the model"));
    h.stop().await;
}
