//! The HTTP surface of ARCHITECTURE §4: every bad-webhook case, the tenant
//! API (never across tenants), admin endpoints, health and metrics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, Tenant};
use serde_json::{json, Value};
use sinks::servicedesk::SdpAuth;
use sinks::store::{EmbeddedStore, Store, TenantCache};
use tokio_util::sync::CancellationToken;

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

async fn post(h: &Harness, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value, Option<String>) {
    let mut rb = h.http.post(format!("{}{path}", h.base())).body(body.to_string());
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    let r = rb.send().await.unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null), retry)
}

fn signed(secret: &str, id: &str, ts: i64, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("webhook-id", id.into()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            ingest::signature::sign(secret, id, ts, body.as_bytes()).unwrap(),
        ),
    ]
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_webhook_gets_its_status_and_error_body() {
    let mut h = Harness::start(&[("TICKETFLOW_MAX_BODY_BYTES", "4096")]).await;
    h.add_tenant(&ACME).await;
    let secret = h.secrets["acme"].clone();
    let now = sinks::now_ms() / 1000;
    let good = r#"{"event":"request_created","request":{"id":"42","subject":"VPN"}}"#;
    let path = "/webhooks/servicedesk/acme";

    // 401: each Standard Webhooks header missing.
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let hs: Vec<_> = signed(&secret, "m1", now, good)
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let (s, v, _) = post(&h, path, &hs, good).await;
        assert_eq!((s, code(&v)), (401, "missing_signature_headers"), "{missing}");
        assert!(v["error"]["message"].as_str().unwrap().contains(missing));
    }

    // 403, indistinguishable: tampered body, wrong secret, empty v1, stale and future timestamps, unknown tenant.
    type Case<'a> = (String, Vec<(&'a str, String)>, String);
    let mut cases: Vec<Case> = Vec::new();
    cases.push((
        path.into(),
        signed(&secret, "m2", now, good),
        good.replace("VPN", "VPM"),
    ));
    cases.push((
        path.into(),
        signed(&ingest::signature::generate_secret(), "m3", now, good),
        good.into(),
    ));
    let mut empty = signed(&secret, "m4", now, good);
    empty[3].1 = "v1,".into();
    cases.push((path.into(), empty, good.into()));
    cases.push((path.into(), signed(&secret, "m5", now - 301, good), good.into()));
    cases.push((path.into(), signed(&secret, "m6", now + 301, good), good.into()));
    cases.push((
        "/webhooks/servicedesk/nobody".into(),
        signed(&secret, "m7", now, good),
        good.into(),
    ));
    let mut bodies = Vec::new();
    for (p, hs, body) in &cases {
        let (s, v, _) = post(&h, p, hs, body).await;
        assert_eq!(s, 403, "{p} {v}");
        bodies.push(v);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "403 bodies must not tell the cases apart"
    );

    // 413: over TICKETFLOW_MAX_BODY_BYTES.
    let big = format!(r#"{{"request":{{"id":"1","description":"{}"}}}}"#, "x".repeat(5000));
    let (s, v, _) = post(&h, path, &signed(&secret, "m8", now, &big), &big).await;
    assert_eq!((s, code(&v)), (413, "payload_too_large"));

    // 415: not JSON.
    let mut hs = signed(&secret, "m9", now, good);
    hs[0].1 = "text/plain".into();
    let (s, v, _) = post(&h, path, &hs, good).await;
    assert_eq!((s, code(&v)), (415, "unsupported_media_type"));

    // 400: malformed JSON (correctly signed).
    let bad = r#"{"request": {"id": "1""#;
    let (s, v, _) = post(&h, path, &signed(&secret, "m10", now, bad), bad).await;
    assert_eq!((s, code(&v)), (400, "malformed_json"));

    // 422: required field missing, named.
    for (body, field) in [
        (r#"{"request":{"subject":"x"}}"#, "request.id"),
        (r#"{"event":"request_created"}"#, "request"),
        (r#"{"request":{"id":{"x":1}}}"#, "request.id"),
    ] {
        let (s, v, _) = post(&h, path, &signed(&secret, "m11", now, body), body).await;
        assert_eq!((s, code(&v)), (422, "missing_field"), "{body}");
        assert!(v["error"]["message"].as_str().unwrap().contains(field), "{v}");
    }

    // Nothing above was accepted; a good one is, and a repeat returns the first ids.
    let (s, first, _) = post(&h, path, &signed(&secret, "ok-1", now, good), good).await;
    assert_eq!(s, 202, "{first}");
    assert!(first["job_id"].is_string() && first["correlation_id"].is_string());
    let (s, again, _) = post(&h, path, &signed(&secret, "ok-1", now, good), good).await;
    assert_eq!(s, 202);
    assert_eq!(again["job_id"], first["job_id"]);

    // Several signatures, one of them right; the spec's published vector format.
    let mut hs = signed(&secret, "ok-2", now, good);
    hs[3].1 = format!("v1,Zm9v {}", hs[3].1);
    assert_eq!(post(&h, path, &hs, good).await.0, 202);

    // Rotation: the previous secret stays valid during the grace period.
    let store = h.running().store.clone();
    let new_secret = topology::tenants::rotate(store.as_ref(), "acme", None, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(topology::app::TENANT_CACHE_TTL + Duration::from_millis(200)).await;
    assert_eq!(
        post(&h, path, &signed(&secret, "rot-old", now, good), good).await.0,
        202,
        "previous secret"
    );
    assert_eq!(
        post(&h, path, &signed(&new_secret, "rot-new", now, good), good).await.0,
        202,
        "new secret"
    );
    topology::tenants::rotate(store.as_ref(), "acme", None, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(topology::app::TENANT_CACHE_TTL + Duration::from_millis(200)).await;
    assert_eq!(
        post(&h, path, &signed(&secret, "rot-gone", now, good), good).await.0,
        403,
        "grace over for the first secret"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_over_its_ingest_rate_gets_429_with_retry_after() {
    let mut h = Harness::start(&[("TICKETFLOW_TENANT_RATE", "1")]).await;
    h.add_tenant(&ACME).await;
    h.add_tenant(&GLOBEX).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let (s, v) = h.send("acme", &format!("{i}"), &format!("r{i}"), "Disk full").await;
        statuses.push((s, v));
    }
    let limited = statuses
        .iter()
        .find(|(s, _)| *s == 429)
        .expect("a 429 once the burst is spent");
    assert_eq!(code(&limited.1), "rate_limited");
    let (s, _) = h.send("globex", "1", "g1", "Other tenant").await;
    assert_eq!(s, 202, "another tenant is not limited by acme's rate");
    let hs = signed(
        &h.secrets["acme"],
        "r9",
        sinks::now_ms() / 1000,
        r#"{"request":{"id":"9"}}"#,
    );
    let (s, _, retry) = post(&h, "/webhooks/servicedesk/acme", &hs, r#"{"request":{"id":"9"}}"#).await;
    assert_eq!(s, 429);
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_unavailable_gives_503_never_202() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.db")).await.unwrap());
    let secret = ingest::signature::generate_secret();
    let t = sinks::store::Tenant::new("acme", "http://127.0.0.1:9", SdpAuth::AuthToken, "k", &secret, "tok");
    store.create_tenant(&t).await.unwrap();
    // Nothing listens on this port.
    let dead = format!("127.0.0.1:{}", common::free_port());
    let factory = topology::kafka::KafkaFactory::new(dead.clone());
    let producer = factory.durable_producer(Duration::from_millis(1500)).unwrap();
    let ops = Arc::new(topology::ops::KafkaOps {
        factory,
        dataflow: topology::dataflow::Dataflow::new("ticketflow", 1, vec![Duration::from_secs(1)]),
        services: None,
        monitor: None,
    });
    let state = ingest::IngestState::new(
        TenantCache::new(store.clone(), Duration::from_secs(1)),
        producer,
        ingest::IngestSettings::default(),
        ops,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    tokio::spawn(ingest::serve(listener, state, token.clone()));
    let body = r#"{"request":{"id":"1"}}"#;
    let http = reqwest::Client::new();
    let send = |id: &'static str| {
        let mut rb = http.post(format!("http://{addr}/webhooks/servicedesk/acme")).body(body);
        for (k, v) in signed(&secret, id, sinks::now_ms() / 1000, body) {
            rb = rb.header(k, v);
        }
        rb.send()
    };
    let r = send("w1").await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "broker_unavailable");
    // The retry of an unacknowledged webhook is the same job (same ids) once accepted.
    let claim = store
        .claim_webhook("acme", "w1", "new-job", "new-corr", 60_000)
        .await
        .unwrap();
    assert!(matches!(claim, sinks::store::WebhookClaim::Proceed { job_id, .. } if job_id != "new-job"));
    // Readiness says why.
    let r = http.get(format!("http://{addr}/health/ready")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["kafka"]["status"], "failed");
    assert_eq!(v["checks"]["store"]["status"], "ok");
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_api_never_crosses_tenants_and_admin_needs_its_token() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    h.add_tenant(&GLOBEX).await;
    let (_, a) = h.send("acme", "100", "a1", "Shared drive slow").await;
    let (_, g) = h.send("globex", "100", "g1", "Shared drive slow").await;
    let (ja, jg) = (
        a["job_id"].as_str().unwrap().to_string(),
        g["job_id"].as_str().unwrap().to_string(),
    );
    h.wait_history(
        &[("acme".into(), ja.clone()), ("globex".into(), jg.clone())],
        Duration::from_secs(60),
    )
    .await;
    let (ta, tg) = (h.tokens["acme"].clone(), h.tokens["globex"].clone());
    let get = |path: String, token: Option<String>| {
        let mut rb = h.http.get(format!("{}{path}", h.base()));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        async move {
            let r = rb.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // History: each tenant sees its own job, never the other's.
    let (s, v) = get(format!("/api/v1/enhancements/{ja}"), Some(ta.clone())).await;
    assert_eq!((s, v["tenant_id"].as_str()), (200, Some("acme")));
    assert_eq!(
        get(format!("/api/v1/enhancements/{jg}"), Some(ta.clone())).await.0,
        404,
        "acme must not read globex's job"
    );
    let (_, v) = get("/api/v1/enhancements?ticket_id=100".into(), Some(tg.clone())).await;
    let rows = v["enhancements"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["tenant_id"], "globex");
    assert_eq!(get("/api/v1/enhancements?ticket_id=100".into(), None).await.0, 401);
    assert_eq!(
        get("/api/v1/enhancements?ticket_id=100".into(), Some("tf_wrong".into()))
            .await
            .0,
        401
    );
    assert_eq!(get("/api/v1/enhancements".into(), Some(ta.clone())).await.0, 400);

    // Feedback: only on one's own jobs; list and stats are per tenant.
    let fb = |token: &str, job: &str, rating: i64| {
        h.http
            .post(format!("{}/api/v1/feedback", h.base()))
            .bearer_auth(token)
            .json(&json!({"job_id": job, "rating": rating, "helpful": true, "technician": "sam"}))
            .send()
    };
    assert_eq!(fb(&ta, &ja, 5).await.unwrap().status().as_u16(), 201);
    assert_eq!(
        fb(&ta, &jg, 1).await.unwrap().status().as_u16(),
        404,
        "feedback on another tenant's job"
    );
    assert_eq!(fb(&ta, &ja, 9).await.unwrap().status().as_u16(), 422);
    let bad = h
        .http
        .post(format!("{}/api/v1/feedback", h.base()))
        .bearer_auth(&ta)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let (s, v) = get("/api/v1/feedback".into(), Some(ta.clone())).await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(1)));
    let (_, v) = get("/api/v1/feedback".into(), Some(tg.clone())).await;
    assert_eq!(v["count"], 0, "globex sees none of acme's feedback");
    let (_, v) = get("/api/v1/feedback/stats".into(), Some(ta.clone())).await;
    assert_eq!(v["average_rating"], 5.0);
    assert_eq!(v["helpful_ratio"], 1.0);
    // Feedback metric: only the accepted one counts (not the 404 or 422).
    let metrics = h
        .http
        .get(format!("{}/metrics", h.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ticketflow_feedback_total{helpful="true",rating="5",tenant="acme"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"rating="9""#), "{metrics}");
    assert_eq!(
        get("/api/v1/feedback?start_date=2026-13-01".into(), Some(ta.clone()))
            .await
            .0,
        400
    );

    // Admin endpoints.
    assert_eq!(get("/api/v1/lag".into(), None).await.0, 401);
    assert_eq!(
        get("/api/v1/lag".into(), Some(ta.clone())).await.0,
        401,
        "a tenant token is not the admin token"
    );
    let (s, v) = get("/api/v1/lag".into(), Some("admin-secret".into())).await;
    assert_eq!(s, 200);
    assert_eq!(v["groups"].as_array().unwrap().len(), 5);
    assert_eq!(
        get("/api/v1/dlq?stage=bogus".into(), Some("admin-secret".into()))
            .await
            .0,
        400
    );
    let (s, v) = get("/api/v1/dlq?stage=update".into(), Some("admin-secret".into())).await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(0)));

    // Health and metrics.
    assert_eq!(get("/health".into(), None).await.0, 200);
    let (s, v) = get("/health/ready".into(), None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")));
    let (_, v) = get("/health/enhancement".into(), None).await;
    assert_eq!(v["status"], "healthy", "{v}");
    for check in ["kafka", "store", "llm", "servicedesk"] {
        assert_eq!(v["checks"][check]["status"], "ok", "{check}: {v}");
    }
    let metrics = h
        .http
        .get(format!("{}/metrics", h.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ticketflow_webhooks_received_total",
        "ticketflow_stage_records_total",
        "ticketflow_stage_duration_seconds",
        "ticketflow_external_request_duration_seconds",
        "ticketflow_enhancements_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The dashboard is behind the admin (or viewer) token.
    let denied = h.http.get(format!("{}/dashboard", h.base())).send().await.unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    let page = h
        .http
        .get(format!("{}/dashboard", h.base()))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("ticketflow.update"), "dashboard shows the groups");
    assert_eq!(get("/nope".into(), None).await.0, 404);
    h.stop().await;
}

/// A 3 MiB body against the default 1 MiB limit, sent 20 times — with a
/// content-length and chunked (no length): each sender gets its 413, never
/// a connection reset while still writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_body_still_being_written_gets_its_413() {
    let mut h = Harness::start(&[]).await;
    h.add_tenant(&ACME).await;
    let secret = h.secrets["acme"].clone();
    let now = sinks::now_ms() / 1000;
    let big = format!(r#"{{"request":{{"id":"1","description":"{}"}}}}"#, "x".repeat(3 << 20));
    let url = format!("{}/webhooks/servicedesk/acme", h.base());
    for i in 0..20 {
        let hs = signed(&secret, &format!("big-{i}"), now, &big);
        let body = if i % 2 == 0 {
            reqwest::Body::from(big.clone())
        } else {
            // Chunked: the size shows only while reading.
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                big.as_bytes().chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
            reqwest::Body::wrap_stream(futures::stream::iter(chunks))
        };
        let mut rb = h.http.post(&url).body(body);
        for (k, v) in &hs {
            rb = rb.header(*k, v);
        }
        let r = rb.send().await.unwrap_or_else(|e| panic!("send {i}: {e:?}"));
        assert_eq!(r.status().as_u16(), 413, "attempt {i}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(code(&v), "payload_too_large");
    }
}
