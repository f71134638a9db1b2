//! A ServiceDesk Plus v3 simulator: requests, notes, solutions, assets;
//! `authtoken` and `Zoho-oauthtoken` auth per portal; faults per portal.
//!
//! Portals are reached as cloud URLs, `{base}/app/{portal}/api/v3/...`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::Latency;
use crate::servicedesk::{SdpAuth, SDP_ACCEPT};

/// A fault a portal answers with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SdpFault {
    /// 401 with status_code 4022 on every call.
    Unauthorized,
    /// 429 with status_code 4015 and `Retry-After`.
    RateLimited { retry_after_secs: u64 },
    /// 500 on this fraction (0..=1) of calls.
    ServerErrors { fraction: f64 },
    /// HTTP 200 whose body says the call failed (status_code 4000).
    ErrorInside200,
}

/// A note as the simulator received it.
#[derive(Debug, Clone)]
pub struct RecordedNote {
    pub portal: String,
    pub request_id: String,
    pub note_id: String,
    pub description: String,
    pub show_to_requester: bool,
    /// `authtoken` or `zoho`.
    pub auth_kind: &'static str,
    pub token: String,
    pub content_type: String,
    pub at_ms: i64,
}

#[derive(Default)]
struct Portal {
    auth: Option<(SdpAuth, String)>,
    requests: HashMap<String, Value>,
    notes: HashMap<String, Vec<Value>>,
    solutions: Vec<Value>,
    assets: Vec<Value>,
    fault: Option<SdpFault>,
}

#[derive(Default)]
struct Inner {
    portals: HashMap<String, Portal>,
    recorded: Vec<RecordedNote>,
    calls: u64,
    /// (portal, epoch ms) of every call.
    call_log: Vec<(String, i64)>,
    next_note_id: u64,
    auto_create: bool,
    latency: Latency,
}

type Shared = Arc<Mutex<Inner>>;

pub struct SdpSimulator {
    addr: SocketAddr,
    inner: Shared,
    handle: JoinHandle<()>,
}

impl Drop for SdpSimulator {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn status_body(http: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({"response_status": {
        "status_code": if code == 2000 { 2000 } else { 4000 },
        "messages": [{"status_code": code, "type": "failed", "message": message}],
        "status": "failed"
    }});
    (http, Json(body)).into_response()
}

fn success() -> Value {
    json!({"status_code": 2000, "status": "success"})
}

impl SdpSimulator {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let inner: Shared = Arc::default();
        let router = Router::new()
            .route("/app/{portal}/api/v3/requests/{id}", get(get_request))
            .route(
                "/app/{portal}/api/v3/requests/{id}/notes",
                get(list_notes).post(add_note),
            )
            .route("/app/{portal}/api/v3/solutions", get(list_solutions))
            .route("/app/{portal}/api/v3/assets", get(list_assets))
            .with_state(inner.clone());
        let (addr, handle) = super::serve(addr, router).await?;
        Ok(SdpSimulator { addr, inner, handle })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SDP base URL of `portal` (what `/api/v3/...` is appended to).
    pub fn base_url(&self, portal: &str) -> String {
        format!("http://{}/app/{}", self.addr, portal)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("simulator lock"))
    }

    /// Creates a portal that accepts only `token` with `auth`.
    pub fn add_portal(&self, portal: &str, auth: SdpAuth, token: &str) {
        self.with(|i| i.portals.entry(portal.to_string()).or_default().auth = Some((auth, token.to_string())));
    }

    /// Adds a request; `fields` uses SDP's shapes (`{"subject": .., "priority": {"name": ..}}`).
    pub fn add_request(&self, portal: &str, id: &str, mut fields: Value) {
        fields["id"] = json!(id);
        self.with(|i| {
            i.portals
                .entry(portal.to_string())
                .or_default()
                .requests
                .insert(id.to_string(), fields)
        });
    }

    pub fn add_solution(&self, portal: &str, id: &str, title: &str, description: &str) {
        self.with(|i| {
            i.portals.entry(portal.to_string()).or_default().solutions.push(json!({
                "id": id, "title": title, "description": description,
                "url": format!("/app/{portal}/solutions/{id}")
            }))
        });
    }

    pub fn add_asset(&self, portal: &str, name: &str, ip: &str, product_type: &str, user: &str, site: &str) {
        self.with(|i| {
            i.portals.entry(portal.to_string()).or_default().assets.push(json!({
                "id": format!("a-{name}"), "name": name, "ip_address": ip,
                "product_type": {"name": product_type}, "user": {"name": user}, "site": {"name": site}
            }))
        });
    }

    pub fn set_fault(&self, portal: &str, fault: Option<SdpFault>) {
        self.with(|i| i.portals.entry(portal.to_string()).or_default().fault = fault);
    }

    /// Unknown request ids answer as if the request existed (load tests).
    pub fn auto_create_requests(&self, on: bool) {
        self.with(|i| i.auto_create = on);
    }

    pub fn set_latency(&self, latency: Latency) {
        self.with(|i| i.latency = latency);
    }

    /// Every note received, in order.
    pub fn notes(&self) -> Vec<RecordedNote> {
        self.with(|i| i.recorded.clone())
    }

    /// The notes received after the first `start`, in order: a waiter
    /// that polls reads each note once instead of copying them all.
    pub fn notes_from(&self, start: usize) -> Vec<RecordedNote> {
        self.with(|i| {
            i.recorded
                .get(start..)
                .map(<[RecordedNote]>::to_vec)
                .unwrap_or_default()
        })
    }

    /// Bytes of note text the simulator holds (each note is kept twice: as
    /// the portal's note and in the record of received notes), so a memory
    /// measurement of a process hosting it can tell its share.
    pub fn note_bytes_held(&self) -> usize {
        self.with(|i| i.recorded.iter().map(|n| 2 * n.description.len()).sum())
    }

    /// Drops every note, request and call record the simulator keeps (the
    /// portals and their settings stay), so a memory measurement of the
    /// process hosting it can see what the simulator held.
    pub fn forget_traffic(&self) {
        self.with(|i| {
            i.recorded = Vec::new();
            i.call_log = Vec::new();
            for p in i.portals.values_mut() {
                p.requests = HashMap::new();
                p.notes = HashMap::new();
            }
        });
    }

    pub fn note_count(&self) -> usize {
        self.with(|i| i.recorded.len())
    }

    /// API calls received, successful or not.
    pub fn calls(&self) -> u64 {
        self.with(|i| i.calls)
    }

    /// When each call for `portal` arrived (epoch ms), in order.
    pub fn call_times(&self, portal: &str) -> Vec<i64> {
        self.with(|i| {
            i.call_log
                .iter()
                .filter(|(p, _)| p == portal)
                .map(|(_, t)| *t)
                .collect()
        })
    }
}

/// Checks Accept, auth and faults; on success returns the auth kind and token.
fn admit(inner: &Shared, portal: &str, headers: &HeaderMap) -> Result<(&'static str, String), Box<Response>> {
    let mut i = inner.lock().expect("simulator lock");
    i.calls += 1;
    i.call_log.push((portal.to_string(), crate::now_ms()));
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !accept.contains(SDP_ACCEPT) {
        return Err(Box::new(status_body(
            StatusCode::BAD_REQUEST,
            4000,
            "Accept header must be application/vnd.manageengine.sdp.v3+json",
        )));
    }
    let Some(p) = i.portals.get(portal) else {
        return Err(Box::new(status_body(
            StatusCode::NOT_FOUND,
            4007,
            "Invalid URL: no such portal",
        )));
    };
    let presented = if let Some(t) = headers.get("authtoken").and_then(|v| v.to_str().ok()) {
        Some((SdpAuth::AuthToken, t.to_string()))
    } else {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Zoho-oauthtoken "))
            .map(|t| (SdpAuth::Zoho, t.to_string()))
    };
    match p.fault {
        Some(SdpFault::Unauthorized) => {
            return Err(Box::new(status_body(
                StatusCode::UNAUTHORIZED,
                4022,
                "Invalid API key received",
            )));
        }
        Some(SdpFault::RateLimited { retry_after_secs }) => {
            let mut r = status_body(
                StatusCode::TOO_MANY_REQUESTS,
                4015,
                "Too many requests: rate limit exceeded",
            );
            r.headers_mut()
                .insert("retry-after", retry_after_secs.to_string().parse().expect("digits"));
            return Err(Box::new(r));
        }
        Some(SdpFault::ServerErrors { fraction }) if rand::random::<f64>() < fraction => {
            return Err(Box::new(status_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                5000,
                "Internal server error",
            )));
        }
        Some(SdpFault::ErrorInside200) => {
            return Err(Box::new(status_body(StatusCode::OK, 4001, "Operation failed")));
        }
        _ => {}
    }
    match (&p.auth, presented) {
        (Some((want_kind, want)), Some((kind, token))) if *want_kind == kind && *want == token => {
            Ok((kind.as_str(), token))
        }
        _ => Err(Box::new(status_body(
            StatusCode::UNAUTHORIZED,
            4022,
            "Invalid API key received",
        ))),
    }
}

fn request_of(i: &mut Inner, portal: &str, id: &str) -> Option<Value> {
    let auto = i.auto_create;
    let p = i.portals.get_mut(portal)?;
    if let Some(r) = p.requests.get(id) {
        return Some(r.clone());
    }
    auto.then(|| {
        let r = json!({"id": id, "subject": format!("Request {id}"), "description": "Created by the load generator",
            "status": {"name": "Open"}, "priority": {"name": "Medium"}});
        p.requests.insert(id.to_string(), r.clone());
        r
    })
}

async fn get_request(
    State(inner): State<Shared>,
    Path((portal, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let latency = inner.lock().expect("simulator lock").latency;
    latency.wait().await;
    if let Err(r) = admit(&inner, &portal, &headers) {
        return *r;
    }
    let mut i = inner.lock().expect("simulator lock");
    match request_of(&mut i, &portal, &id) {
        Some(r) => Json(json!({"request": r, "response_status": success()})).into_response(),
        None => status_body(StatusCode::NOT_FOUND, 4007, "Invalid URL: request not found"),
    }
}

async fn list_notes(
    State(inner): State<Shared>,
    Path((portal, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&inner, &portal, &headers) {
        return *r;
    }
    let mut i = inner.lock().expect("simulator lock");
    if request_of(&mut i, &portal, &id).is_none() {
        return status_body(StatusCode::NOT_FOUND, 4007, "Invalid URL: request not found");
    }
    let notes = i
        .portals
        .get(&portal)
        .and_then(|p| p.notes.get(&id))
        .cloned()
        .unwrap_or_default();
    Json(json!({"notes": notes, "response_status": [success()], "list_info": {"has_more_rows": false, "row_count": notes.len()}})).into_response()
}

async fn add_note(
    State(inner): State<Shared>,
    Path((portal, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let latency = inner.lock().expect("simulator lock").latency;
    latency.wait().await;
    let (auth_kind, token) = match admit(&inner, &portal, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return status_body(StatusCode::BAD_REQUEST, 4000, "input_data must be sent form-encoded");
    }
    let form: HashMap<String, String> = match serde_urlencoded_parse(&body) {
        Some(f) => f,
        None => return status_body(StatusCode::BAD_REQUEST, 4000, "unreadable form body"),
    };
    let Some(input) = form
        .get("input_data")
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    else {
        return status_body(
            StatusCode::BAD_REQUEST,
            4012,
            "Mandatory field input_data is missing or not JSON",
        );
    };
    let Some(note) = input.get("request_note").or_else(|| input.get("note")) else {
        return status_body(StatusCode::BAD_REQUEST, 4012, "Mandatory field request_note is missing");
    };
    let Some(description) = note
        .get("description")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    else {
        return status_body(StatusCode::BAD_REQUEST, 4012, "Mandatory field description is missing");
    };
    let show = note.get("show_to_requester").and_then(Value::as_bool).unwrap_or(true);
    let mut i = inner.lock().expect("simulator lock");
    if request_of(&mut i, &portal, &id).is_none() {
        return status_body(StatusCode::NOT_FOUND, 4007, "Invalid URL: request not found");
    }
    i.next_note_id += 1;
    let note_id = (100_000 + i.next_note_id).to_string();
    let stored = json!({"id": note_id, "description": description, "show_to_requester": show});
    i.portals
        .get_mut(&portal)
        .expect("portal admitted")
        .notes
        .entry(id.clone())
        .or_default()
        .push(stored.clone());
    i.recorded.push(RecordedNote {
        portal,
        request_id: id,
        note_id,
        description: description.to_string(),
        show_to_requester: show,
        auth_kind,
        token,
        content_type,
        at_ms: crate::now_ms(),
    });
    (
        StatusCode::CREATED,
        Json(json!({"request_note": stored, "response_status": success()})),
    )
        .into_response()
}

fn serde_urlencoded_parse(body: &str) -> Option<HashMap<String, String>> {
    serde_urlencoded::from_str(body).ok()
}

fn search_terms(q: &HashMap<String, String>) -> (Vec<(String, Vec<String>)>, usize) {
    let input: Value = q
        .get("input_data")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let limit = input
        .pointer("/list_info/row_count")
        .and_then(Value::as_u64)
        .unwrap_or(10) as usize;
    let criteria = input
        .pointer("/list_info/search_criteria")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    let field = c.get("field")?.as_str()?.to_string();
                    let values = match (c.get("value"), c.get("values")) {
                        (Some(Value::String(v)), _) => vec![v.to_lowercase()],
                        (_, Some(Value::Array(vs))) => {
                            vs.iter().filter_map(|v| v.as_str().map(str::to_lowercase)).collect()
                        }
                        _ => return None,
                    };
                    Some((field, values))
                })
                .collect()
        })
        .unwrap_or_default();
    (criteria, limit)
}

fn matches(item: &Value, criteria: &[(String, Vec<String>)], exact: bool) -> bool {
    criteria.is_empty()
        || criteria.iter().any(|(field, values)| {
            let v = item.get(field).and_then(Value::as_str).unwrap_or("").to_lowercase();
            values
                .iter()
                .any(|want| if exact { v == *want } else { v.contains(want.as_str()) })
        })
}

async fn list_solutions(
    State(inner): State<Shared>,
    Path(portal): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&inner, &portal, &headers) {
        return *r;
    }
    let (criteria, limit) = search_terms(&q);
    let i = inner.lock().expect("simulator lock");
    let found: Vec<Value> = i
        .portals
        .get(&portal)
        .map(|p| {
            p.solutions
                .iter()
                .filter(|s| matches(s, &criteria, false))
                .take(limit)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Json(json!({"solutions": found, "response_status": [success()], "list_info": {"row_count": found.len()}}))
        .into_response()
}

async fn list_assets(
    State(inner): State<Shared>,
    Path(portal): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&inner, &portal, &headers) {
        return *r;
    }
    let (criteria, limit) = search_terms(&q);
    let i = inner.lock().expect("simulator lock");
    let found: Vec<Value> = i
        .portals
        .get(&portal)
        .map(|p| {
            p.assets
                .iter()
                .filter(|a| matches(a, &criteria, true))
                .take(limit)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Json(json!({"assets": found, "response_status": [success()], "list_info": {"row_count": found.len()}}))
        .into_response()
}
