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

/// A page for people (admin or viewer token; browsers get a Basic-auth
/// prompt where the password is the token): lag over time per group, each
/// group's status in colour with its reason, per-stage throughput and drain
/// estimate, backlog per tenant, dead-letter depths. Server-rendered (no
/// script), refreshed every 10 s.
pub async fn dashboard(State(state): State<Arc<IngestState>>, headers: axum::http::HeaderMap) -> Response {
    if let Err(e) = crate::api::authenticate_viewer(&state, &headers) {
        let mut r = (
            e.status,
            Html(format!(
                "<!doctype html><title>Ticketflow</title><p>{}</p>",
                escape(&e.message)
            )),
        )
            .into_response();
        if e.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(
                    "Basic realm=\"Ticketflow dashboard (password: admin or viewer token)\", charset=\"UTF-8\"",
                ),
            );
        }
        return r;
    }
    let lag = state.ops.lag().await.unwrap_or_else(|e| json!({"error": e}));
    Html(render_dashboard(&lag)).into_response()
}

/// HTML-escapes text (tenant ids and reasons come from outside).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn status_colour(status: &str) -> &'static str {
    match status {
        "OK" => "#2e7d32",
        "WARN" => "#f9a825",
        "REWIND" => "#6a1b9a",
        "STALL" => "#ef6c00",
        "STOP" | "ERR" => "#c62828",
        _ => "#757575",
    }
}

const SERIES_COLOURS: [&str; 6] = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828", "#00838f"];

/// An SVG line chart of total lag per group over the kept history.
fn lag_chart(lag: &Value) -> String {
    let points = lag["history"].as_array().cloned().unwrap_or_default();
    let groups: Vec<String> = lag["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["group"].as_str().map(String::from))
        .collect();
    let (w, h, pad) = (760.0f64, 220.0f64, 40.0f64);
    if points.len() < 2 {
        return "<p class=muted>Lag over time appears after two samples.</p>".into();
    }
    let t0 = points[0]["at_ms"].as_f64().unwrap_or(0.0);
    let t1 = points[points.len() - 1]["at_ms"]
        .as_f64()
        .unwrap_or(t0 + 1.0)
        .max(t0 + 1.0);
    let max = points
        .iter()
        .filter_map(|p| p["lag"].as_object())
        .flat_map(|m| m.values().filter_map(Value::as_f64))
        .fold(1.0f64, f64::max);
    let x = |t: f64| pad + (t - t0) / (t1 - t0) * (w - 2.0 * pad);
    let y = |v: f64| h - pad / 2.0 - v / max * (h - pad);
    let mut svg = format!(
        "<svg role=img aria-label='lag over time' width='{w}' height='{h}' viewBox='0 0 {w} {h}'>\
         <line x1='{pad}' y1='{}' x2='{}' y2='{}' stroke='#999'/>\
         <text x='4' y='{}' font-size='11'>{max:.0}</text><text x='4' y='{}' font-size='11'>0</text>\
         <text x='{pad}' y='{}' font-size='11'>{} ago</text><text x='{}' y='{}' font-size='11' text-anchor='end'>now</text>",
        y(0.0),
        w - pad,
        y(0.0),
        y(max) + 4.0,
        y(0.0),
        h - 2.0,
        if t1 - t0 < 120_000.0 { format!("{:.0} s", (t1 - t0) / 1000.0) } else { format!("{:.0} min", (t1 - t0) / 60_000.0) },
        w - pad,
        h - 2.0,
    );
    for (i, g) in groups.iter().enumerate() {
        let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .filter_map(|p| {
                Some(format!(
                    "{:.1},{:.1}",
                    x(p["at_ms"].as_f64()?),
                    y(p["lag"][g].as_f64()?)
                ))
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill='none' stroke='{colour}' stroke-width='2' points='{}'/>",
            path.join(" ")
        ));
    }
    svg.push_str("</svg><div class=legend>");
    for (i, g) in groups.iter().enumerate() {
        svg.push_str(&format!(
            "<span><i style='background:{}'></i>{}</span>",
            SERIES_COLOURS[i % SERIES_COLOURS.len()],
            escape(g)
        ));
    }
    svg.push_str("</div>");
    svg
}

/// The dashboard's HTML for a lag report (the JSON of `/api/v1/lag`).
pub fn render_dashboard(lag: &Value) -> String {
    let num = |v: &Value| v.as_f64().map(|f| format!("{f:.1}")).unwrap_or_else(|| "–".into());
    let mut cards = String::new();
    let mut rows = String::new();
    let mut tenants = String::new();
    for g in lag["groups"].as_array().into_iter().flatten() {
        let group = escape(g["group"].as_str().unwrap_or("?"));
        let stage = escape(g["stage"].as_str().unwrap_or("?"));
        let status = g["status"].as_str().unwrap_or("?");
        let reason = escape(g["reason"].as_str().unwrap_or(""));
        let colour = status_colour(status);
        let eta = match g["eta_seconds"].as_f64() {
            Some(s) if s <= 0.0 => "drained".to_string(),
            Some(s) if s < 120.0 => format!("{s:.0} s"),
            Some(s) => format!("{:.1} min", s / 60.0),
            None => "not draining".to_string(),
        };
        let members = g["members"]
            .as_i64()
            .map(|m| m.to_string())
            .unwrap_or_else(|| "?".into());
        cards.push_str(&format!(
            "<div class=card style='border-left:8px solid {colour}'><div class=stage>{stage}</div>\
             <div class=status data-group='{group}' data-status='{status}' style='background:{colour}'>{status}</div>\
             <div class=big>{}</div><div class=muted>records behind</div><div class=reason>{reason}</div></div>",
            g["total_lag"].as_i64().unwrap_or(0)
        ));
        rows.push_str(&format!(
            "<tr><td>{group}</td><td><b style='color:{colour}'>{status}</b></td><td>{members}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{eta}</td></tr>",
            g["total_lag"].as_i64().unwrap_or(0),
            num(&g["seconds_behind"]),
            num(&g["consume_rate"]),
            num(&g["produce_rate"]),
        ));
        for t in g["tenants"].as_array().into_iter().flatten().take(20) {
            tenants.push_str(&format!(
                "<tr><td>{group}</td><td>{}</td><td>{}</td></tr>",
                escape(t["tenant"].as_str().unwrap_or("?")),
                t["backlog"].as_i64().unwrap_or(0)
            ));
        }
        let unattributed = g["tenant_backlog_unattributed"].as_i64().unwrap_or(0);
        if unattributed > 0 {
            tenants.push_str(&format!(
                "<tr><td>{group}</td><td class=muted>(keys not read yet)</td><td>{unattributed}</td></tr>"
            ));
        }
    }
    if tenants.is_empty() {
        tenants = "<tr><td colspan=3 class=muted>no backlog</td></tr>".into();
    }
    let mut dlq = String::new();
    for d in lag["dlq"].as_array().into_iter().flatten() {
        let depth = d["depth"].as_i64().unwrap_or(0);
        let added = d["added_in_window"].as_i64().unwrap_or(0);
        dlq.push_str(&format!(
            "<tr><td>{}</td><td class='{}'>{depth}</td><td>{added}</td></tr>",
            escape(d["stage"].as_str().unwrap_or("?")),
            if depth > 0 { "bad" } else { "" }
        ));
    }
    let error = lag["error"]
        .as_str()
        .map(|e| format!("<p class=bad>Lag could not be read: {}</p>", escape(e)))
        .unwrap_or_default();
    let m = metrics();
    let mut local = String::new();
    for stage in ["validate", "context", "synthesize", "update", "record"] {
        let ok = m.stage_records.with_label_values(&[stage, "ok"]).get();
        let retry = m.stage_records.with_label_values(&[stage, "retryable_error"]).get();
        let perm = m.stage_records.with_label_values(&[stage, "permanent_error"]).get();
        let inflight = m.stage_inflight.with_label_values(&[stage]).get();
        local.push_str(&format!(
            "<tr><td>{stage}</td><td>{ok}</td><td>{retry}</td><td>{perm}</td><td>{inflight}</td></tr>"
        ));
    }
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=10>\
<meta name=viewport content='width=device-width, initial-scale=1'><title>Ticketflow — lag and throughput</title><style>\
body{{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f6f8;color:#1f2933}}\
header{{background:#102a43;color:#fff;padding:14px 24px}}header h1{{margin:0;font-size:20px}}\
main{{padding:16px 24px}}h2{{font-size:16px;margin:22px 0 8px}}\
.cards{{display:flex;gap:12px;flex-wrap:wrap}}.card{{background:#fff;border-radius:6px;padding:10px 14px;min-width:150px;box-shadow:0 1px 2px #0002}}\
.stage{{font-weight:600;text-transform:capitalize}}.status{{display:inline-block;color:#fff;border-radius:3px;padding:1px 8px;font-size:12px;font-weight:700;margin:4px 0}}\
.big{{font-size:26px;font-weight:600}}.muted{{color:#7b8794;font-size:12px}}.reason{{font-size:11px;color:#52606d;max-width:220px}}\
table{{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}}td,th{{padding:5px 12px;border-bottom:1px solid #e4e7eb;text-align:right}}\
td:first-child,th:first-child{{text-align:left}}th{{background:#f0f4f8;font-size:12px}}.bad{{color:#c62828;font-weight:700}}\
.legend span{{margin-right:14px;font-size:12px}}.legend i{{display:inline-block;width:10px;height:10px;margin-right:4px}}\
.grid{{display:flex;gap:24px;flex-wrap:wrap}}</style></head><body>\
<header><h1>Ticketflow — consumer lag and throughput</h1><div class=muted style='color:#bcccdc'>window {} s, {} sample(s); refreshes every 10 s</div></header><main>{error}\
<h2>Stage groups</h2><div class=cards>{cards}</div>\
<h2>Lag over time (records behind, per group)</h2>{}\
<h2>Throughput and drain</h2><table><tr><th>group</th><th>status</th><th>members</th><th>lag</th><th>seconds behind</th><th>consumed/s</th><th>arriving/s</th><th>time to drain</th></tr>{rows}</table>\
<div class=grid><div><h2>Backlog per tenant</h2><table><tr><th>group</th><th>tenant</th><th>records</th></tr>{tenants}</table></div>\
<div><h2>Dead-letter topics</h2><table><tr><th>stage</th><th>records held</th><th>added in window</th></tr>{dlq}</table></div>\
<div><h2>This process</h2><table><tr><th>stage</th><th>ok</th><th>retryable errors</th><th>permanent errors</th><th>in flight</th></tr>{local}</table></div></div>\
<p class=muted>Status rules: OK (lag reached zero or shrinks), WARN (consuming but falling behind, or too few samples), STALL (members present, offset not moving), \
STOP (no member, offset not moving), REWIND (offset moved back), ERR (offsets unreadable). Raw data: <code>/api/v1/lag</code>, <code>/metrics</code>.</p>\
</main></body></html>",
        num(&lag["window_seconds"]),
        lag["samples"].as_i64().unwrap_or(0),
        lag_chart(lag),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_escapes_outside_text_and_shows_status() {
        let lag = json!({
            "window_seconds": 120.0, "samples": 3,
            "groups": [{"group": "ticketflow.validate", "stage": "validate", "status": "STOP",
                        "reason": "no member <script>", "total_lag": 7, "members": 0,
                        "tenants": [{"tenant": "<img src=x>", "backlog": 7}]}],
            "dlq": [{"stage": "update", "depth": 2, "added_in_window": 1}],
            "history": [{"at_ms": 0, "lag": {"ticketflow.validate": 1}}, {"at_ms": 10000, "lag": {"ticketflow.validate": 7}}],
        });
        let html = render_dashboard(&lag);
        assert!(html.contains("data-status='STOP'"));
        assert!(html.contains("&lt;img src=x&gt;"));
        assert!(!html.contains("<img src=x>"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("<polyline"));
    }
}
