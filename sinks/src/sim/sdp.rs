//! A ServiceDesk Plus v3 simulator: requests, notes, solutions, assets;
//! `authtoken` and `Zoho-oauthtoken` auth per portal; faults per portal.
//!
//! Portals are reached as cloud URLs, `{base}/app/{portal}/api/v3/...`.
//! The same server plays the Zoho accounts server (`{base}/oauth/v2/token`):
//! it issues access tokens for registered OAuth clients, with an expiry, and
//! portals set up with [`SdpSimulator::add_oauth_portal`] accept only those
//! tokens while they are valid (401 after).
//!
//! As SDP v3 does: list reads page by `list_info` (`row_count`, at most 100,
//! default 10; `start_index` from 1; `has_more_rows` in the answer), a
//! deleted request answers 404 with the error envelope, and failures can
//! arrive inside HTTP 200 (an object `response_status` on single reads and
//! writes, an array on list reads).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
    /// HTTP 200 whose body says the call failed (status_code 4000): an
    /// object `response_status` on single reads and writes, an array on
    /// list reads (notes, solutions, assets), as SDP shapes them.
    ErrorInside200,
}

/// A Zoho OAuth client registered with the simulated accounts server.
#[derive(Debug, Clone)]
struct OAuthClient {
    client_secret: String,
    refresh_token: String,
}

/// An access token the simulated accounts server issued.
#[derive(Debug, Clone)]
struct IssuedToken {
    client_id: String,
    expires_at: std::time::Instant,
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
    /// The accepted auth and token (with [`SdpAuth::ZohoOAuth`]: the OAuth
    /// client id whose access tokens are accepted).
    auth: Option<(SdpAuth, String)>,
    /// Request ids deleted: 404 even with auto-created requests.
    deleted: std::collections::HashSet<String>,
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
    oauth_clients: HashMap<String, OAuthClient>,
    access_tokens: HashMap<String, IssuedToken>,
    /// Lifetime of issued access tokens (Zoho: one hour).
    token_ttl: Option<std::time::Duration>,
    /// Successful refreshes at the token endpoint.
    refreshes: u64,
    /// Token endpoint requests refused.
    refresh_refusals: u64,
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
            .route("/oauth/v2/token", post(oauth_token))
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

    /// The Zoho accounts URL this simulator plays (`{it}/oauth/v2/token`).
    pub fn accounts_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers a Zoho OAuth client with the accounts server.
    pub fn add_oauth_client(&self, client_id: &str, client_secret: &str, refresh_token: &str) {
        self.with(|i| {
            i.oauth_clients.insert(
                client_id.to_string(),
                OAuthClient {
                    client_secret: client_secret.to_string(),
                    refresh_token: refresh_token.to_string(),
                },
            )
        });
    }

    /// Creates a portal that accepts the unexpired access tokens issued to
    /// `client_id` (and nothing else).
    pub fn add_oauth_portal(&self, portal: &str, client_id: &str) {
        self.with(|i| {
            i.portals.entry(portal.to_string()).or_default().auth = Some((SdpAuth::ZohoOAuth, client_id.to_string()))
        });
    }

    /// Lifetime of access tokens issued from now on (default one hour;
    /// `expires_in` is announced in whole seconds, at least 1).
    pub fn set_token_ttl(&self, ttl: std::time::Duration) {
        self.with(|i| i.token_ttl = Some(ttl));
    }

    /// Invalidates every issued access token now (SDP answers 401 to them),
    /// as an early expiry or a revocation would.
    pub fn expire_access_tokens(&self) {
        self.with(|i| {
            let now = std::time::Instant::now();
            for t in i.access_tokens.values_mut() {
                t.expires_at = now;
            }
        });
    }

    /// Access tokens issued by the token endpoint (successful refreshes).
    pub fn token_refreshes(&self) -> u64 {
        self.with(|i| i.refreshes)
    }

    /// Token endpoint requests refused (bad client, secret or refresh token).
    pub fn token_refusals(&self) -> u64 {
        self.with(|i| i.refresh_refusals)
    }

    /// Deletes a request: every later call about it answers 404.
    pub fn delete_request(&self, portal: &str, id: &str) {
        self.with(|i| {
            let p = i.portals.entry(portal.to_string()).or_default();
            p.requests.remove(id);
            p.notes.remove(id);
            p.deleted.insert(id.to_string());
        });
    }

    /// Sets a request's status (`{"name": status}`), creating the request
    /// as auto-creation would when it is not there yet.
    pub fn set_request_status(&self, portal: &str, id: &str, status: &str) {
        self.with(|i| {
            let p = i.portals.entry(portal.to_string()).or_default();
            p.deleted.remove(id);
            let r = p.requests.entry(id.to_string()).or_insert_with(|| {
                json!({"id": id, "subject": format!("Request {id}"), "description": "Created by the simulator",
                    "priority": {"name": "Medium"}})
            });
            r["status"] = json!({"name": status});
        });
    }

    /// Puts a note on a request directly (as a technician would), without
    /// recording it as received; returns its id.
    pub fn add_existing_note(&self, portal: &str, request_id: &str, description: &str) -> String {
        self.with(|i| {
            i.next_note_id += 1;
            let note_id = (100_000 + i.next_note_id).to_string();
            i.portals
                .entry(portal.to_string())
                .or_default()
                .notes
                .entry(request_id.to_string())
                .or_default()
                .push(json!({"id": note_id, "description": description, "show_to_requester": false}));
            note_id
        })
    }

    /// The notes on a request (seeded and posted), oldest first.
    pub fn notes_on(&self, portal: &str, request_id: &str) -> Vec<String> {
        self.with(|i| {
            i.portals
                .get(portal)
                .and_then(|p| p.notes.get(request_id))
                .map(|n| {
                    n.iter()
                        .map(|n| n["description"].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default()
        })
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

/// A failure inside HTTP 200, shaped as SDP shapes it for the endpoint.
fn failure_inside_200(list: bool) -> Response {
    let status = json!({
        "status_code": 4000,
        "messages": [{"status_code": 4001, "type": "failed", "message": "Operation failed"}],
        "status": "failed"
    });
    let status = if list { json!([status]) } else { status };
    (StatusCode::OK, Json(json!({ "response_status": status }))).into_response()
}

/// Checks Accept, auth and faults; on success returns the auth kind and
/// token. `list`: a list read (its failures use the array envelope).
fn admit(
    inner: &Shared,
    portal: &str,
    headers: &HeaderMap,
    list: bool,
) -> Result<(&'static str, String), Box<Response>> {
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
            return Err(Box::new(failure_inside_200(list)));
        }
        _ => {}
    }
    match (&p.auth, presented) {
        (Some((SdpAuth::ZohoOAuth, client_id)), Some((SdpAuth::Zoho, token))) => match i.access_tokens.get(&token) {
            Some(t) if t.client_id == *client_id && std::time::Instant::now() < t.expires_at => {
                Ok((SdpAuth::ZohoOAuth.as_str(), token))
            }
            Some(t) if t.client_id == *client_id => Err(Box::new(status_body(
                StatusCode::UNAUTHORIZED,
                4001,
                "OAuth access token expired",
            ))),
            _ => Err(Box::new(status_body(
                StatusCode::UNAUTHORIZED,
                4022,
                "Invalid OAuth access token",
            ))),
        },
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
    if p.deleted.contains(id) {
        return None;
    }
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
    if let Err(r) = admit(&inner, &portal, &headers, false) {
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
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&inner, &portal, &headers, true) {
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
    let (start, rows) = paging(&q);
    let page: Vec<Value> = notes.iter().skip(start - 1).take(rows).cloned().collect();
    let has_more_rows = start - 1 + page.len() < notes.len();
    Json(json!({"notes": page, "response_status": [success()], "list_info": {
        "has_more_rows": has_more_rows, "row_count": page.len(), "start_index": start
    }}))
    .into_response()
}

/// `list_info.start_index` (from 1) and `row_count` (default 10, at most
/// 100) of a list read, as SDP v3 reads them.
fn paging(q: &HashMap<String, String>) -> (usize, usize) {
    let input: Value = q
        .get("input_data")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let num = |k: &str| input.pointer(&format!("/list_info/{k}")).and_then(Value::as_u64);
    let start = num("start_index").unwrap_or(1).max(1) as usize;
    let rows = num("row_count").unwrap_or(10).clamp(1, 100) as usize;
    (start, rows)
}

/// The Zoho accounts server's token endpoint: `grant_type=refresh_token`
/// with `client_id`, `client_secret` and `refresh_token` as query (or
/// form) parameters. Refusals answer HTTP 200 with `{"error": ..}`, as Zoho
/// does.
async fn oauth_token(State(inner): State<Shared>, Query(q): Query<HashMap<String, String>>, body: String) -> Response {
    let mut params = q;
    if let Some(form) = serde_urlencoded_parse(&body) {
        params.extend(form);
    }
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let mut i = inner.lock().expect("simulator lock");
    if get("grant_type") != "refresh_token" {
        i.refresh_refusals += 1;
        return Json(json!({"error": "unsupported_grant_type"})).into_response();
    }
    let client = i.oauth_clients.get(get("client_id")).cloned();
    let error = match client {
        None => Some("invalid_client"),
        Some(c) if c.client_secret != get("client_secret") => Some("invalid_client_secret"),
        Some(c) if c.refresh_token != get("refresh_token") => Some("invalid_code"),
        Some(_) => None,
    };
    if let Some(error) = error {
        i.refresh_refusals += 1;
        return Json(json!({ "error": error })).into_response();
    }
    let ttl = i.token_ttl.unwrap_or(std::time::Duration::from_secs(3600));
    let token = format!("1000.{}", uuid::Uuid::new_v4().simple());
    i.access_tokens.insert(
        token.clone(),
        IssuedToken {
            client_id: get("client_id").to_string(),
            expires_at: std::time::Instant::now() + ttl,
        },
    );
    i.refreshes += 1;
    Json(json!({
        "access_token": token,
        "api_domain": "https://www.zohoapis.com",
        "token_type": "Bearer",
        "expires_in": ttl.as_secs().max(1),
    }))
    .into_response()
}

async fn add_note(
    State(inner): State<Shared>,
    Path((portal, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let latency = inner.lock().expect("simulator lock").latency;
    latency.wait().await;
    let (auth_kind, token) = match admit(&inner, &portal, &headers, false) {
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
    if let Err(r) = admit(&inner, &portal, &headers, true) {
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
    if let Err(r) = admit(&inner, &portal, &headers, true) {
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
