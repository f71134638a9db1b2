//! Health checks, metrics and the dashboard page.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use sinks::metrics::metrics;

use crate::IngestState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Liveness: the process answers.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn kafka_check(state: &IngestState) -> (bool, String) {
    match tokio::time::timeout(CHECK_TIMEOUT, state.ops.kafka_ok()).await {
        Ok(Ok(())) => (true, "reachable".into()),
        Ok(Err(e)) => (false, e),
        Err(_) => (false, "no answer within 3 s".into()),
    }
}

async fn store_check(state: &IngestState) -> (bool, String) {
    match tokio::time::timeout(CHECK_TIMEOUT, state.tenants.store().ping()).await {
        Ok(Ok(())) => (true, "reachable".into()),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, "no answer within 3 s".into()),
    }
}

fn check(ok: bool, detail: String) -> Value {
    json!({"status": if ok { "ok" } else { "failed" }, "detail": detail})
}

/// Readiness: broker and store reachable, every stage of this process
/// running and holding partitions where its group needs it, the producer
/// usable, and not shutting down. A `503` names each failed check.
pub async fn ready(State(state): State<Arc<IngestState>>) -> Response {
    let ((k_ok, k), (s_ok, s)) = tokio::join!(kafka_check(&state), store_check(&state));
    let draining = state.is_draining();
    let mut checks = Map::new();
    checks.insert("kafka".into(), check(k_ok, k));
    checks.insert("store".into(), check(s_ok, s));
    let mut ok = k_ok && s_ok && !draining;
    let mut reasons: Vec<String> = Vec::new();
    if let Some(p) = state.process.get() {
        for (name, result) in p.checks() {
            match result {
                Ok(()) => {
                    checks.insert(name, check(true, "ok".into()));
                }
                Err(reason) => {
                    ok = false;
                    reasons.push(format!("{name}: {reason}"));
                    checks.insert(name, check(false, reason));
                }
            }
        }
    }
    let body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": checks,
        "draining": draining,
        "reasons": reasons,
    });
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
        .into_response()
}

/// The enhancement pipeline's health: `healthy` when every dependency is,
/// else `degraded` (with each check's detail).
pub async fn enhancement(State(state): State<Arc<IngestState>>) -> Json<Value> {
    let ((k_ok, k), (s_ok, s)) = tokio::join!(kafka_check(&state), store_check(&state));
    let mut checks = Map::new();
    checks.insert("kafka".into(), check(k_ok, k));
    checks.insert("store".into(), check(s_ok, s));
    let mut all = k_ok && s_ok;
    for (name, ok, detail) in state.ops.external_checks() {
        all &= ok;
        checks.insert(name.into(), check(ok, detail));
    }
    Json(json!({"status": if all { "healthy" } else { "degraded" }, "checks": checks}))
}

pub async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
        .into_response()
}

/// A page for people: lag per group and partition, stage throughput.
pub async fn dashboard(State(state): State<Arc<IngestState>>) -> Html<String> {
    let lag = state.ops.lag().await.unwrap_or_else(|e| json!({"error": e}));
    let mut rows = String::new();
    if let Some(groups) = lag.get("groups").and_then(Value::as_array) {
        for g in groups {
            let group = g.get("group").and_then(Value::as_str).unwrap_or("?");
            let total = g.get("total_lag").and_then(Value::as_i64).unwrap_or(0);
            let oldest = g
                .get("oldest_unconsumed_age_seconds")
                .and_then(Value::as_f64)
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "-".into());
            rows.push_str(&format!("<tr><td>{group}</td><td>{total}</td><td>{oldest}</td></tr>"));
        }
    }
    let m = metrics();
    let mut stages = String::new();
    for stage in ["validate", "context", "synthesize", "update", "record"] {
        let ok = m.stage_records.with_label_values(&[stage, "ok"]).get();
        let retry = m.stage_records.with_label_values(&[stage, "retryable_error"]).get();
        let perm = m.stage_records.with_label_values(&[stage, "permanent_error"]).get();
        let inflight = m.stage_inflight.with_label_values(&[stage]).get();
        stages.push_str(&format!(
            "<tr><td>{stage}</td><td>{ok}</td><td>{retry}</td><td>{perm}</td><td>{inflight}</td></tr>"
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5><title>Ticketflow</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}</style></head>\
         <body><h1>Ticketflow</h1><h2>Consumer lag</h2><table><tr><th>group</th><th>lag (records)</th><th>oldest unconsumed</th></tr>{rows}</table>\
         <h2>Stages (this process)</h2><table><tr><th>stage</th><th>ok</th><th>retryable errors</th><th>permanent errors</th><th>in flight</th></tr>{stages}</table>\
         <p>Refreshes every 5 s. Raw data: <code>/metrics</code>, <code>/api/v1/lag</code> (admin token).</p></body></html>"
    ))
}
