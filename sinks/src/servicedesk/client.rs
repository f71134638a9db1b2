use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use schemas::{IpReference, KbArticle, TicketFields};
use serde_json::{json, Value};
use tracing::Instrument;

use super::envelope::{parse_envelope, Envelope};
use super::oauth::{TokenCache, ZohoOAuth};
use crate::metrics::observe_external;
use crate::{parse_retry_after, RetryHint, Secret};

pub const SDP_ACCEPT: &str = "application/vnd.manageengine.sdp.v3+json";

/// How a tenant's SDP authenticates API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpAuth {
    /// On-premises: `authtoken: <technician key>`.
    AuthToken,
    /// Cloud with a static token: `Authorization: Zoho-oauthtoken <token>`
    /// (kept for tenants set up before OAuth refresh; such a token lapses
    /// after an hour unless an outside process renews it).
    Zoho,
    /// Cloud with Zoho OAuth: access tokens bought with the tenant's client
    /// id, client secret and refresh token ([`ZohoOAuth`]), cached until
    /// shortly before expiry, sent as `Authorization: Zoho-oauthtoken`.
    ZohoOAuth,
}

impl SdpAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            SdpAuth::AuthToken => "authtoken",
            SdpAuth::Zoho => "zoho",
            SdpAuth::ZohoOAuth => "zoho-oauth",
        }
    }
}

impl std::str::FromStr for SdpAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "authtoken" => Ok(SdpAuth::AuthToken),
            "zoho" => Ok(SdpAuth::Zoho),
            "zoho-oauth" => Ok(SdpAuth::ZohoOAuth),
            other => Err(format!(
                "unknown SDP auth '{other}': expected authtoken, zoho or zoho-oauth"
            )),
        }
    }
}

/// Where and how to reach one tenant's ServiceDesk Plus.
#[derive(Debug, Clone)]
pub struct SdpTenant {
    /// What `/api/v3/...` is appended to.
    pub base_url: String,
    pub auth: SdpAuth,
    /// The `authtoken` or static Zoho token; empty with [`SdpAuth::ZohoOAuth`].
    pub token: Secret,
    /// The OAuth credentials of [`SdpAuth::ZohoOAuth`].
    pub oauth: Option<ZohoOAuth>,
}

/// How long to stay away after a `429` without `Retry-After`.
pub const DEFAULT_RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(5);

/// A failed SDP call, classified where it was born.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SdpError {
    #[error("ServiceDesk Plus rejected the credentials (HTTP {http_status}{}): {message}", sdp_code.map(|c| format!(", status_code {c}")).unwrap_or_default())]
    Unauthorized {
        http_status: u16,
        sdp_code: Option<i64>,
        message: String,
    },
    #[error("ServiceDesk Plus has no {what} (HTTP 404)")]
    NotFound { what: String },
    #[error("ServiceDesk Plus rate limit reached (HTTP {http_status}, status_code 4015); retry after {retry_after:?}")]
    RateLimited {
        http_status: u16,
        retry_after: Option<Duration>,
    },
    #[error("ServiceDesk Plus server error (HTTP {http_status}): {message}")]
    Server { http_status: u16, message: String },
    #[error("ServiceDesk Plus rejected the request (HTTP {http_status}, status_code {sdp_code}): {message}")]
    Rejected {
        http_status: u16,
        sdp_code: i64,
        message: String,
    },
    #[error("ServiceDesk Plus unreachable: {0}")]
    Transport(String),
    #[error("ServiceDesk Plus answered with an unreadable body (HTTP {http_status}): {message}")]
    Malformed { http_status: u16, message: String },
}

impl SdpError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            SdpError::Unauthorized { .. } | SdpError::NotFound { .. } | SdpError::Rejected { .. } => {
                RetryHint::Permanent
            }
            SdpError::RateLimited { retry_after, .. } => RetryHint::Throttled {
                after: retry_after.unwrap_or(DEFAULT_RATE_LIMIT_BACKOFF),
            },
            SdpError::Server { .. } | SdpError::Transport(_) | SdpError::Malformed { .. } => {
                RetryHint::Retryable { after: None }
            }
        }
    }

    /// Whether the failure says SDP itself is unhealthy (counts for the breaker).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            SdpError::Server { .. } | SdpError::Transport(_) | SdpError::Malformed { .. }
        )
    }
}

/// The parts of an SDP request Ticketflow uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpRequest {
    pub id: String,
    pub fields: TicketFields,
}

/// Request statuses after which a ticket is not enhanced.
pub const CLOSED_STATUSES: &[&str] = &["closed", "resolved", "cancelled", "canceled"];

impl SdpRequest {
    /// The status name when SDP says the request is closed or resolved.
    pub fn closed_status(&self) -> Option<&str> {
        self.fields
            .status
            .as_deref()
            .filter(|s| CLOSED_STATUSES.contains(&s.trim().to_lowercase().as_str()))
    }
}

/// One page of a request's notes (`list_info` paging).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotesPage {
    pub notes: Vec<SdpNote>,
    /// `list_info.has_more_rows`: another page follows.
    pub has_more_rows: bool,
}

/// Notes per page: SDP v3 serves at most 100 rows per list call.
pub const NOTES_PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpNote {
    pub id: String,
    pub description: String,
}

/// SDP v3 client; cheap to clone, one connection pool.
#[derive(Clone)]
pub struct SdpClient {
    http: reqwest::Client,
    /// Zoho OAuth access tokens, shared by every clone.
    tokens: std::sync::Arc<TokenCache>,
}

impl Default for SdpClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(20))
    }
}

fn name_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("name")
            .or_else(|| o.get("display_value"))
            .and_then(|n| n.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// Turns an HTTP status and SDP body into success or a classified error.
fn classify(status: StatusCode, headers: &HeaderMap, body: &str, what: &str) -> Result<Value, SdpError> {
    let http_status = status.as_u16();
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let parsed = parse_envelope(body.as_bytes()).ok();
    let (sdp_code, message) = match parsed.as_ref().map(|(_, e)| e) {
        Some(Envelope::Failure {
            status_code, message, ..
        }) => (*status_code, message.clone()),
        _ => (0, body.chars().take(200).collect()),
    };

    if status == StatusCode::TOO_MANY_REQUESTS || sdp_code == 4015 {
        return Err(SdpError::RateLimited {
            http_status,
            retry_after,
        });
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN || sdp_code == 4022 {
        return Err(SdpError::Unauthorized {
            http_status,
            sdp_code: (sdp_code != 0).then_some(sdp_code),
            message,
        });
    }
    // A 404 is "this ticket does not exist" only when SDP itself says so
    // (its failure envelope): a proxy's or web server's 404 page — a wrong
    // base URL or portal — must not skip every ticket as deleted.
    if status == StatusCode::NOT_FOUND && sdp_code != 0 {
        return Err(SdpError::NotFound { what: what.to_string() });
    }
    if status == StatusCode::NOT_FOUND {
        return Err(SdpError::Rejected {
            http_status,
            sdp_code,
            message: format!("HTTP 404 without a ServiceDesk Plus answer (check the tenant's SDP base URL): {message}"),
        });
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Err(SdpError::Server { http_status, message });
    }
    if !status.is_success() {
        return Err(SdpError::Rejected {
            http_status,
            sdp_code,
            message,
        });
    }
    let Some((parsed, envelope)) = parsed else {
        return Err(SdpError::Malformed {
            http_status,
            message: "body is not JSON".into(),
        });
    };
    match envelope {
        Envelope::Success => Ok(parsed),
        Envelope::Failure { .. } if sdp_code == 4007 && message.to_lowercase().contains("not found") => {
            // Some SDP builds answer a deleted request with HTTP 200 and
            // 4007 "... not found".
            Err(SdpError::NotFound { what: what.to_string() })
        }
        Envelope::Failure { .. } => Err(SdpError::Rejected {
            http_status,
            sdp_code,
            message,
        }),
        Envelope::Missing => Err(SdpError::Malformed {
            http_status,
            message: "no response_status in body".into(),
        }),
    }
}

/// `error.type` of a failed SDP call.
fn error_type(e: &SdpError) -> &'static str {
    match e {
        SdpError::Unauthorized { .. } => "unauthorized",
        SdpError::NotFound { .. } => "not_found",
        SdpError::RateLimited { .. } => "rate_limited",
        SdpError::Server { .. } => "server_error",
        SdpError::Rejected { .. } => "rejected",
        SdpError::Transport(_) => "transport",
        SdpError::Malformed { .. } => "malformed",
    }
}

/// The route of an SDP API path, ids replaced: `/api/v3/requests/{id}/notes`.
fn sdp_route(path: &str) -> String {
    let api = path.find("/api/v3/").map_or(path, |i| &path[i..]);
    let mut out = String::with_capacity(api.len());
    let mut after_requests = false;
    for seg in api.split('/').skip(1) {
        out.push('/');
        out.push_str(if after_requests { "{id}" } else { seg });
        after_requests = seg == "requests";
    }
    out
}

/// The OpenTelemetry client span of one SDP call (HTTP semantic
/// conventions; the URL without query or credentials). Its target is the
/// one `processors::trace::TARGET` names: traces only, not the logs.
fn client_span(request: &reqwest::Request) -> tracing::Span {
    let url = request.url();
    let mut full = url.clone();
    full.set_query(None);
    full.set_fragment(None);
    let _ = full.set_username("");
    let _ = full.set_password(None);
    tracing::info_span!(
        target: "trace_spans",
        "servicedesk",
        otel.name = %format_args!("{} {}", request.method(), sdp_route(url.path())),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        error.type = tracing::field::Empty,
        http.request.method = %request.method(),
        http.response.status_code = tracing::field::Empty,
        url.full = %full,
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default().unwrap_or_default(),
        peer.service = "servicedesk",
    )
}

impl SdpClient {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client builds");
        SdpClient {
            http,
            tokens: Default::default(),
        }
    }

    fn url(tenant: &SdpTenant, path: &str) -> String {
        format!("{}/api/v3/{}", tenant.base_url.trim_end_matches('/'), path)
    }

    /// Sends `rb` with the tenant's credentials. With Zoho OAuth a cached
    /// access token is used (bought when there is none or it is about to
    /// expire); when SDP refuses it (401 / 4022), one fresh token is bought
    /// and the call is made once more.
    async fn call(&self, tenant: &SdpTenant, rb: reqwest::RequestBuilder, what: &str) -> Result<Value, SdpError> {
        let rb = rb.header(ACCEPT, SDP_ACCEPT);
        let zoho = |rb: reqwest::RequestBuilder, token: &Secret| {
            rb.header(AUTHORIZATION, format!("Zoho-oauthtoken {}", token.expose()))
        };
        match tenant.auth {
            SdpAuth::AuthToken => self.send(rb.header("authtoken", tenant.token.expose()), what).await,
            SdpAuth::Zoho => self.send(zoho(rb, &tenant.token), what).await,
            SdpAuth::ZohoOAuth => {
                let Some(creds) = &tenant.oauth else {
                    return Err(SdpError::Unauthorized {
                        http_status: 0,
                        sdp_code: None,
                        message: "the tenant's SDP auth is zoho-oauth but it has no OAuth credentials".into(),
                    });
                };
                let token = self.tokens.get(&self.http, creds, None).await?;
                let again = rb.try_clone();
                let first = self.send(zoho(rb, &token), what).await;
                let refused = matches!(
                    &first,
                    Err(SdpError::Unauthorized { http_status, sdp_code, .. })
                        if *http_status == 401 || *sdp_code == Some(4022)
                );
                match again {
                    Some(again) if refused => {
                        let fresh = self.tokens.get(&self.http, creds, Some(&token)).await?;
                        self.send(zoho(again, &fresh), what).await
                    }
                    _ => first,
                }
            }
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<Value, SdpError> {
        let started = Instant::now();
        let (client, request) = rb.build_split();
        let span = match &request {
            Ok(r) => client_span(r),
            Err(_) => tracing::Span::none(),
        };
        let result = async {
            let request = request.map_err(|e| SdpError::Transport(e.without_url().to_string()))?;
            let resp = client
                .execute(request)
                .await
                .map_err(|e| SdpError::Transport(e.without_url().to_string()))?;
            let status = resp.status();
            tracing::Span::current().record("http.response.status_code", status.as_u16());
            let headers = resp.headers().clone();
            let body = resp
                .text()
                .await
                .map_err(|e| SdpError::Transport(e.without_url().to_string()))?;
            classify(status, &headers, &body, what)
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = &result {
            span.record("otel.status_code", "error");
            span.record("otel.status_description", e.to_string());
            span.record("error.type", error_type(e));
        }
        observe_external("servicedesk", result.is_ok(), started);
        result
    }

    /// `GET /api/v3/requests/{id}`.
    pub async fn get_request(&self, tenant: &SdpTenant, id: &str) -> Result<SdpRequest, SdpError> {
        let rb = self.http.get(Self::url(tenant, &format!("requests/{id}")));
        let body = self.call(tenant, rb, &format!("request {id}")).await?;
        let r = body.get("request").ok_or_else(|| SdpError::Malformed {
            http_status: 200,
            message: "no request in body".into(),
        })?;
        let s = |k: &str| r.get(k).and_then(name_of).filter(|v| !v.is_empty());
        let requester = r.get("requester");
        Ok(SdpRequest {
            id: r.get("id").and_then(name_of).unwrap_or_else(|| id.to_string()),
            fields: TicketFields {
                subject: s("subject"),
                description: s("description"),
                requester_name: requester.and_then(|q| q.get("name")).and_then(name_of),
                requester_email: requester
                    .and_then(|q| q.get("email_id").or_else(|| q.get("email")))
                    .and_then(name_of),
                priority: s("priority"),
                category: s("category"),
                site: s("site"),
                created_time: s("created_time"),
                status: s("status"),
            },
        })
    }

    /// One page of `GET /api/v3/requests/{id}/notes`: `row_count` notes
    /// (at most [`NOTES_PAGE_SIZE`]) from `start_index` (1-based), in SDP's
    /// order (oldest first).
    pub async fn list_notes_page(
        &self,
        tenant: &SdpTenant,
        id: &str,
        start_index: u32,
        row_count: u32,
    ) -> Result<NotesPage, SdpError> {
        let row_count = row_count.clamp(1, NOTES_PAGE_SIZE);
        let input = json!({"list_info": {"row_count": row_count, "start_index": start_index.max(1)}});
        let rb = self
            .http
            .get(Self::url(tenant, &format!("requests/{id}/notes")))
            .query(&[("input_data", input.to_string())]);
        let body = self.call(tenant, rb, &format!("request {id}")).await?;
        let notes: Vec<SdpNote> = body
            .get("notes")
            .and_then(Value::as_array)
            .map(|notes| {
                notes
                    .iter()
                    .map(|n| SdpNote {
                        id: n.get("id").and_then(name_of).unwrap_or_default(),
                        description: n
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Without `has_more_rows` (older builds), a full page may have a successor.
        let has_more_rows = match body.pointer("/list_info/has_more_rows") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => notes.len() as u32 >= row_count,
        } && !notes.is_empty();
        Ok(NotesPage { notes, has_more_rows })
    }

    /// Every note of a request, page by page.
    pub async fn list_notes(&self, tenant: &SdpTenant, id: &str) -> Result<Vec<SdpNote>, SdpError> {
        let mut all = Vec::new();
        let mut start = 1u32;
        loop {
            let page = self.list_notes_page(tenant, id, start, NOTES_PAGE_SIZE).await?;
            start = start.saturating_add(page.notes.len() as u32);
            all.extend(page.notes);
            if !page.has_more_rows {
                return Ok(all);
            }
        }
    }

    /// `POST /api/v3/requests/{id}/notes`, returns the new note's id.
    pub async fn add_note(&self, tenant: &SdpTenant, id: &str, description: &str) -> Result<String, SdpError> {
        let input = json!({"request_note": {
            "description": description,
            "show_to_requester": false,
            "mark_first_response": false,
            "add_to_linkedrequest": false,
        }});
        let rb = self
            .http
            .post(Self::url(tenant, &format!("requests/{id}/notes")))
            .form(&[("input_data", input.to_string())]);
        let body = self.call(tenant, rb, &format!("request {id}")).await?;
        let note = body.get("request_note").or_else(|| body.get("note"));
        Ok(note.and_then(|n| n.get("id")).and_then(name_of).unwrap_or_default())
    }

    /// Knowledge-base articles (`GET /api/v3/solutions`) whose title contains
    /// any of `keywords`.
    pub async fn search_solutions(
        &self,
        tenant: &SdpTenant,
        keywords: &[String],
        limit: usize,
    ) -> Result<Vec<KbArticle>, SdpError> {
        if keywords.is_empty() {
            return Ok(Vec::new());
        }
        let criteria: Vec<Value> = keywords
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut c = json!({"field": "title", "condition": "contains", "value": k});
                if i > 0 {
                    c["logical_operator"] = json!("or");
                }
                c
            })
            .collect();
        let input = json!({"list_info": {"row_count": limit, "search_criteria": criteria}});
        let rb = self
            .http
            .get(Self::url(tenant, "solutions"))
            .query(&[("input_data", input.to_string())]);
        let body = self.call(tenant, rb, "solutions").await?;
        Ok(body
            .get("solutions")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .take(limit)
                    .map(|s| KbArticle {
                        id: s.get("id").and_then(name_of).unwrap_or_default(),
                        title: s.get("title").and_then(name_of).unwrap_or_default(),
                        url: s.get("url").and_then(name_of),
                        snippet: s
                            .get("description")
                            .and_then(Value::as_str)
                            .map(|d| d.chars().take(300).collect()),
                        source: "sdp".to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Assets (`GET /api/v3/assets`) with one of `ips` as IP address.
    pub async fn assets_by_ip(&self, tenant: &SdpTenant, ips: &[String]) -> Result<Vec<IpReference>, SdpError> {
        if ips.is_empty() {
            return Ok(Vec::new());
        }
        let input = json!({"list_info": {"row_count": 100, "search_criteria": [
            {"field": "ip_address", "condition": "is", "values": ips}
        ]}});
        let rb = self
            .http
            .get(Self::url(tenant, "assets"))
            .query(&[("input_data", input.to_string())]);
        let body = self.call(tenant, rb, "assets").await?;
        Ok(body
            .get("assets")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|a| {
                        Some(IpReference {
                            ip: a.get("ip_address").and_then(name_of)?,
                            asset_name: a.get("name").and_then(name_of).unwrap_or_default(),
                            asset_type: a.get("product_type").and_then(name_of),
                            owner: a.get("user").and_then(name_of),
                            site: a.get("site").and_then(name_of),
                            hostname: a.get("host_name").and_then(name_of),
                            source: "sdp".to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> HeaderMap {
        HeaderMap::new()
    }

    #[test]
    fn span_names_use_the_route_not_the_ids() {
        assert_eq!(sdp_route("/app/itdesk/api/v3/requests/4711"), "/api/v3/requests/{id}");
        assert_eq!(sdp_route("/api/v3/requests/4711/notes"), "/api/v3/requests/{id}/notes");
        assert_eq!(sdp_route("/api/v3/solutions"), "/api/v3/solutions");
    }

    #[test]
    fn failures_inside_http_200_are_errors() {
        let body = r#"{"response_status":{"status_code":4000,"messages":[{"status_code":4022,"type":"failed","message":"Invalid API key"}],"status":"failed"}}"#;
        let e = classify(StatusCode::OK, &h(), body, "x").unwrap_err();
        assert!(matches!(e, SdpError::Unauthorized { .. }), "{e}");
        assert_eq!(e.retry_hint(), RetryHint::Permanent);

        let body = r#"{"response_status":[{"status_code":4000,"messages":[{"status_code":4015,"message":"limit"}],"status":"failed"}]}"#;
        let e = classify(StatusCode::OK, &h(), body, "x").unwrap_err();
        assert!(matches!(e, SdpError::RateLimited { .. }));
        assert!(e.retry_hint().is_retryable());
    }

    #[test]
    fn http_statuses_are_classified() {
        let mut headers = h();
        headers.insert(RETRY_AFTER, "5".parse().unwrap());
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &headers, "", "x").unwrap_err();
        assert_eq!(
            e.retry_hint(),
            RetryHint::Throttled {
                after: Duration::from_secs(5)
            }
        );
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &h(), "", "x").unwrap_err();
        assert_eq!(
            e.retry_hint(),
            RetryHint::Throttled {
                after: DEFAULT_RATE_LIMIT_BACKOFF
            }
        );
        let e = classify(StatusCode::UNAUTHORIZED, &h(), "{}", "x").unwrap_err();
        assert!(e.to_string().contains("HTTP 401"), "{e}");
        assert_eq!(e.retry_hint(), RetryHint::Permanent);
        assert!(classify(StatusCode::BAD_GATEWAY, &h(), "<html>", "x")
            .unwrap_err()
            .retry_hint()
            .is_retryable());
        let deleted = r#"{"response_status":{"status_code":4000,"status":"failed","messages":[{"status_code":4007,"type":"failed","message":"Invalid URL"}]}}"#;
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, &h(), deleted, "request 7").unwrap_err(),
            SdpError::NotFound { .. }
        ));
        // A 404 that is not SDP's (a wrong base URL behind a proxy) is not
        // "deleted": it fails the job where an operator sees it.
        for body in ["", "<html><body>404 Not Found</body></html>"] {
            let e = classify(StatusCode::NOT_FOUND, &h(), body, "request 7").unwrap_err();
            assert!(matches!(e, SdpError::Rejected { http_status: 404, .. }), "{e:?}");
            assert!(e.to_string().contains("check the tenant's SDP base URL"), "{e}");
        }
        assert!(matches!(
            classify(StatusCode::OK, &h(), "<html>", "x").unwrap_err(),
            SdpError::Malformed { .. }
        ));
        let ok = r#"{"response_status":{"status_code":2000,"status":"success"},"request":{}}"#;
        assert!(classify(StatusCode::OK, &h(), ok, "x").is_ok());
    }
}
