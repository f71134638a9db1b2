//! Faults of the systems around Ticketflow, in process: SDP throttling and
//! errors, an LLM outage, poison records on every stage's input, and a
//! tenant's own SDP rate limit. Each ends with every `202`-accepted webhook
//! accounted for: exactly one note on the SDP simulator, or a DLQ record
//! plus a `failed` history row — nothing lost, nothing duplicated.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{Harness, Tenant};
use futures::StreamExt;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sinks::servicedesk::SdpAuth;
use sinks::sim::{LlmFault, SdpFault};
use sinks::store::HistoryStatus;

const ACME: Tenant = Tenant {
    id: "acme",
    auth: SdpAuth::Zoho,
    token: "zoho-acme",
};
const GLOBEX: Tenant = Tenant {
    id: "globex",
    auth: SdpAuth::AuthToken,
    token: "key-globex",
};
const STAGES: [&str; 5] = ["validate", "context", "synthesize", "update", "record"];

/// Sends `n` webhooks for `tenant` (tickets `base..base+n`), 8 at a time;
/// returns the job ids of those answered 202.
async fn send_jobs(h: &Harness, tenant: &str, base: usize, n: usize, prefix: &str) -> Vec<(String, String)> {
    let sent: Vec<(u16, serde_json::Value)> = futures::stream::iter(0..n)
        .map(|i| async move {
            h.send(
                tenant,
                &(base + i).to_string(),
                &format!("{prefix}-{i}"),
                &format!("Printer {i} on floor 3 is offline"),
            )
            .await
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        sent.iter().all(|(s, _)| *s == 202),
        "{:?}",
        sent.iter().find(|(s, _)| *s != 202)
    );
    sent.iter()
        .map(|(_, b)| (tenant.to_string(), b["job_id"].as_str().unwrap().to_string()))
        .collect()
}

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

/// Waits for every job's history row, then checks that each job has exactly
/// one note, or none and a DLQ record plus a `failed` row. Returns (noted, dead-lettered).
async fn assert_accounted(h: &Harness, jobs: &[(String, String)], timeout: Duration) -> (usize, usize) {
    let rows = h.wait_history(jobs, timeout).await;
    let notes = h.sdp.notes();
    let dlq = dlq_jobs(h).await;
    let (mut noted, mut dead) = (0, 0);
    for (tenant, job) in jobs {
        let marker = format!("Ticketflow job {job}");
        let mine: Vec<_> = notes.iter().filter(|n| n.description.contains(&marker)).collect();
        let row = &rows[job];
        match mine.len() {
            1 => {
                assert_eq!(mine[0].portal, *tenant, "note on the right tenant's SDP");
                assert!(
                    matches!(row.status, HistoryStatus::Success | HistoryStatus::Fallback),
                    "job {job} has a note but history {row:?}"
                );
                noted += 1;
            }
            0 => {
                assert!(
                    dlq.contains_key(job),
                    "job {job} has neither a note nor a DLQ record: lost ({row:?})"
                );
                assert_eq!(row.status, HistoryStatus::Failed, "{row:?}");
                dead += 1;
            }
            n => panic!("job {job} has {n} notes"),
        }
    }
    // No note that belongs to no accepted job.
    let known: HashSet<&str> = jobs.iter().map(|(_, j)| j.as_str()).collect();
    let stray = notes
        .iter()
        .filter(|n| {
            !known
                .iter()
                .any(|j| n.description.contains(&format!("Ticketflow job {j}")))
        })
        .count();
    assert_eq!(stray, 0, "notes of unknown jobs");
    (noted, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn sdp_429_with_retry_after_for_30s_then_recovery_every_ticket_gets_one_note() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant_limited(&ACME, 600).await;
    h.sdp
        .set_fault("acme", Some(SdpFault::RateLimited { retry_after_secs: 5 }));
    let fault_started = Instant::now();
    let calls_before = h.sdp.calls();
    let jobs = send_jobs(&h, "acme", 1000, 30, "thr").await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(fault_started.elapsed())).await;
    let calls_during = h.sdp.calls() - calls_before;
    h.sdp.set_fault("acme", None);
    let (noted, dead) = assert_accounted(&h, &jobs, Duration::from_secs(90)).await;
    println!(
        "429 for 30 s: {calls_during} SDP calls during the fault for 30 jobs; {noted} noted, {dead} dead-lettered"
    );
    // Throttling uses no retry attempt: after the outage every job is enhanced.
    assert_eq!((noted, dead), (30, 0));
    // Retry-After is honoured: each job tried at most about once per 5 s
    // (context and update), far from a hot loop at the 200 ms retry tier.
    assert!(
        calls_during <= 30 * 3 * 8,
        "SDP hammered during 429s: {calls_during} calls"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn sdp_answering_500_to_30_percent_loses_and_duplicates_nothing() {
    let mut h = Harness::start(&[("CIRCUIT_BREAKER_TIMEOUT_MS", "500")]).await;
    h.add_tenant(&ACME).await;
    h.add_tenant(&GLOBEX).await;
    h.sdp.set_fault("acme", Some(SdpFault::ServerErrors { fraction: 0.3 }));
    h.sdp
        .set_fault("globex", Some(SdpFault::ServerErrors { fraction: 0.3 }));
    let mut jobs = send_jobs(&h, "acme", 2000, 40, "five-a").await;
    jobs.extend(send_jobs(&h, "globex", 2000, 40, "five-g").await);
    let (noted, dead) = assert_accounted(&h, &jobs, Duration::from_secs(120)).await;
    println!("SDP 500 on 30 %: {noted} noted, {dead} dead-lettered after every retry tier");
    assert!(noted >= 70, "most jobs survive 30 % errors with 3 retry tiers: {noted}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn llm_down_for_the_whole_run_every_ticket_gets_a_fallback_note() {
    let mut h = Harness::start(&[
        ("CIRCUIT_BREAKER_THRESHOLD", "3"),
        ("CIRCUIT_BREAKER_TIMEOUT_MS", "60000"),
    ])
    .await;
    h.add_tenant(&ACME).await;
    h.llm.set_fault(Some(LlmFault::Status {
        status: 503,
        retry_after_secs: None,
    }));
    // Two waves: the first opens the breaker (3 failures); the second comes
    // while it is open. (One wave of 40 could reach synthesize at once and
    // call the LLM 40 times before any failure was counted: the breaker
    // counts consecutive failures, it does not limit concurrency.)
    let mut jobs = send_jobs(&h, "acme", 3000, 10, "llm-a").await;
    let (noted, dead) = assert_accounted(&h, &jobs, Duration::from_secs(90)).await;
    assert_eq!((noted, dead), (10, 0));
    let first_wave_calls = h.llm.requests();
    assert!(first_wave_calls <= 10, "{first_wave_calls}");
    let second = send_jobs(&h, "acme", 3010, 30, "llm-b").await;
    jobs.extend(second);
    let (noted, dead) = assert_accounted(&h, &jobs, Duration::from_secs(90)).await;
    assert_eq!((noted, dead), (40, 0));
    let rows = h.wait_history(&jobs, Duration::from_secs(1)).await;
    assert!(
        rows.values().all(|r| r.status == HistoryStatus::Fallback),
        "history says fallback"
    );
    // The breaker is open: the second wave never reached the LLM.
    assert_eq!(
        h.llm.requests(),
        first_wave_calls,
        "LLM called for the second wave while the breaker was open"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn poison_records_on_every_stage_input_go_to_its_dlq_and_stages_keep_running() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    let inputs = [
        ("validate", "ticketflow.webhooks"),
        ("context", "ticketflow.validated"),
        ("synthesize", "ticketflow.context"),
        ("update", "ticketflow.synthesized"),
        ("record", "ticketflow.updated"),
    ];
    let producer = h.running().ops.factory.producer(Duration::from_secs(10)).unwrap();
    for (stage, topic) in inputs {
        let job = format!("poison-{stage}");
        let with_headers = processors::headers::JobHeaders {
            correlation_id: format!("corr-{stage}"),
            tenant_id: "acme".into(),
            job_id: job.clone(),
            traceparent: processors::headers::new_traceparent(),
            attempt: 1,
            replayed_from: None,
        }
        .to_kafka();
        // Undecodable bytes with every header; a valid single-object marker
        // with an unknown fingerprint; a record with no headers at all.
        let unknown_fp = [0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        let cases: [(&[u8], Option<OwnedHeaders>); 3] = [
            (b"not avro at all", Some(with_headers.clone())),
            (&unknown_fp, Some(with_headers)),
            (
                b"no headers",
                Some(OwnedHeaders::new().insert(Header {
                    key: "unrelated",
                    value: Some("x"),
                })),
            ),
        ];
        for (value, headers) in cases {
            let mut rec = FutureRecord::to(topic).key("acme:poison").payload(value);
            if let Some(hd) = headers {
                rec = rec.headers(hd);
            }
            producer.send(rec, Duration::from_secs(10)).await.unwrap();
        }
    }
    // The pipeline still works after the poison.
    let jobs = send_jobs(&h, "acme", 4000, 3, "after-poison").await;
    assert_eq!(assert_accounted(&h, &jobs, Duration::from_secs(60)).await, (3, 0));

    let deadline = Instant::now() + Duration::from_secs(30);
    for (stage, _) in inputs {
        loop {
            let v = h.running().ops.dlq_records(stage, 100).await.unwrap();
            let recs = v["records"].as_array().unwrap().clone();
            if recs.len() >= 3 {
                assert_eq!(recs.len(), 3, "{stage}: {v}");
                for r in &recs {
                    assert_eq!(r["headers"]["error_class"], "permanent", "{stage}: {r}");
                    assert_eq!(r["headers"]["failed_stage"], stage);
                    let err = r["headers"]["error"].as_str().unwrap();
                    assert!(
                        err.contains("poison record") || err.contains("cannot handle"),
                        "{stage}: clear error: {err}"
                    );
                }
                let errors: Vec<&str> = recs.iter().map(|r| r["headers"]["error"].as_str().unwrap()).collect();
                assert!(errors.iter().any(|e| e.contains("missing")), "{stage}: {errors:?}");
                assert!(errors.iter().any(|e| e.contains("fingerprint")), "{stage}: {errors:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{stage} DLQ has {} records: {v}", recs.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Poison with a tenant header is recorded as that tenant's failed job
    // (record reads every other stage's DLQ).
    let row = h
        .wait_history(&[("acme".into(), "poison-update".into())], Duration::from_secs(30))
        .await;
    assert_eq!(row["poison-update"].status, HistoryStatus::Failed);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn a_tenants_sdp_rate_limit_is_kept_without_holding_up_other_tenants() {
    let mut h = Harness::start(&[("TICKETFLOW_RATE_LIMIT_MAX_WAIT_MS", "500")]).await;
    // 300 calls a minute: 5 per second, bursts of 5.
    h.add_tenant_limited(&ACME, 300).await;
    h.add_tenant(&GLOBEX).await;
    let started = sinks::now_ms();
    let slow = send_jobs(&h, "acme", 5000, 12, "rl-a").await;
    let fast = send_jobs(&h, "globex", 5000, 40, "rl-g").await;
    let fast_rows = h.wait_history(&fast, Duration::from_secs(60)).await;
    let fast_done = fast_rows.values().map(|r| r.completed_at_ms).max().unwrap();
    // Both tenants' jobs at once: a note of either counts as known.
    let all: Vec<(String, String)> = slow.iter().chain(&fast).cloned().collect();
    assert_eq!(assert_accounted(&h, &all, Duration::from_secs(90)).await, (52, 0));

    let times = h.sdp.call_times("acme");
    let span_ms = times.last().unwrap() - times.first().unwrap();
    // n calls at 5/s with a burst of 5 need at least (n - 5) / 5 s (one
    // reservation may cover up to 3 calls started together: slack of 3).
    let min_span_ms = ((times.len() as i64 - 5 - 3).max(0) * 1000) / 5;
    println!(
        "acme: {} SDP calls over {span_ms} ms (limit 300/min needs >= {min_span_ms} ms); globex done {} ms after start",
        times.len(),
        fast_done - started
    );
    assert!(
        span_ms >= min_span_ms,
        "rate limit exceeded: {} calls in {span_ms} ms",
        times.len()
    );
    // In any one-second window, at most the burst plus one second's rate (and the slack).
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|x| **x < t + 1000).count();
        assert!(in_window <= 5 + 5 + 3, "{in_window} calls within 1 s from {t}");
    }
    // No head-of-line blocking: the other tenant finished before the throttled one.
    let slow_rows = h.wait_history(&slow, Duration::from_secs(1)).await;
    let slow_done = slow_rows.values().map(|r| r.completed_at_ms).max().unwrap();
    assert!(fast_done < slow_done, "globex done at {fast_done}, acme at {slow_done}");
    h.stop().await;
}
