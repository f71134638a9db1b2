//! Tenant API (bearer API token; a tenant only ever sees its own rows):
//! feedback and enhancement history. Admin API (bearer
//! `TICKETFLOW_ADMIN_TOKEN`): consumer lag and dead-letter topics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sinks::now_ms;
use sinks::store::{hash_token, Feedback, Tenant};

use crate::error::ApiError;
use crate::IngestState;

const DAY_MS: i64 = 86_400_000;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The tenant whose API token is presented.
async fn authenticate(state: &IngestState, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token (Authorization: Bearer <tenant API token>)"))?;
    state
        .tenants
        .store()
        .tenant_by_api_token_hash(&hash_token(token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid API token"))
}

/// Checks the admin token in constant time.
fn authenticate_admin(state: &IngestState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(want) = &state.settings.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin API is disabled: set TICKETFLOW_ADMIN_TOKEN",
        ));
    };
    let got = bearer(headers).ok_or_else(|| ApiError::unauthorized("missing admin bearer token"))?;
    if !token_matches(got, want.expose()) {
        return Err(ApiError::unauthorized("invalid admin token"));
    }
    Ok(())
}

/// Compares a presented token with the expected one in constant time
/// (the one helper, [`sinks::secrets::constant_time_eq`]).
pub(crate) fn token_matches(got: &str, want: &str) -> bool {
    sinks::secrets::constant_time_eq(got.as_bytes(), want.as_bytes())
}

/// The token of `Authorization: Bearer <t>` or, for browsers, the password
/// of `Authorization: Basic` (any user name).
pub(crate) fn bearer_or_basic(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = bearer(headers) {
        return Some(t.to_string());
    }
    use base64::Engine;
    let b64 = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?
        .trim();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

/// Read-only operator access (lag, DLQ listing, dashboard): the admin token
/// or `TICKETFLOW_VIEWER_TOKEN`, as a bearer token or a Basic password.
pub(crate) fn authenticate_viewer(state: &IngestState, headers: &HeaderMap) -> Result<(), ApiError> {
    let (admin, viewer) = (&state.settings.admin_token, &state.settings.viewer_token);
    if admin.is_none() && viewer.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "operator pages are disabled: set TICKETFLOW_ADMIN_TOKEN or TICKETFLOW_VIEWER_TOKEN",
        ));
    }
    let got = bearer_or_basic(headers)
        .ok_or_else(|| ApiError::unauthorized("missing admin or viewer token (Authorization: Bearer <token>)"))?;
    // Both compared, whichever matches, so timing says nothing about which.
    let a = admin.as_ref().is_some_and(|w| token_matches(&got, w.expose()));
    let v = viewer.as_ref().is_some_and(|w| token_matches(&got, w.expose()));
    if a | v {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid admin or viewer token"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    pub job_id: String,
    /// 1 (useless) to 5 (excellent).
    pub rating: i64,
    pub helpful: Option<bool>,
    pub comment: Option<String>,
    pub technician: Option<String>,
}

pub async fn add_feedback(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant = authenticate(&state, &headers).await?;
    let body: FeedbackBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid feedback body: {e}")))?;
    if !(1..=5).contains(&body.rating) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "rating must be between 1 and 5",
        ));
    }
    if body.comment.as_ref().is_some_and(|c| c.len() > 4000) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "comment is longer than 4000 bytes",
        ));
    }
    let store = state.tenants.store();
    let job = store
        .history_by_job(&tenant.tenant_id, &body.job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no enhancement job '{}' for this tenant", body.job_id)))?;
    let fb = Feedback {
        feedback_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.tenant_id.clone(),
        job_id: job.job_id,
        ticket_id: job.ticket_id,
        rating: body.rating as u8,
        helpful: body.helpful,
        comment: body.comment,
        technician: body.technician,
        created_at_ms: now_ms(),
    };
    store.add_feedback(&fb).await?;
    let helpful = match fb.helpful {
        Some(true) => "true",
        Some(false) => "false",
        None => "unanswered",
    };
    sinks::metrics::metrics()
        .feedback
        .with_label_values(&[&fb.tenant_id, &fb.rating.to_string(), helpful])
        .inc();
    Ok((StatusCode::CREATED, Json(json!(fb))))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD` to epoch ms at 00:00 UTC.
pub fn parse_date(s: &str, name: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_request(format!("{name} must be a date as YYYY-MM-DD, got '{s}'"));
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Err(bad());
    }
    let (y, m, d) = (
        parts[0].parse::<i64>().map_err(|_| bad())?,
        parts[1].parse::<i64>().map_err(|_| bad())?,
        parts[2].parse::<i64>().map_err(|_| bad())?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * DAY_MS)
}

#[derive(Debug, Deserialize)]
pub struct Range {
    start_date: Option<String>,
    end_date: Option<String>,
}

/// `[from, until)` in epoch ms; `end_date` is inclusive; default: last 30 days.
fn range(r: &Range) -> Result<(i64, i64), ApiError> {
    let until = match &r.end_date {
        Some(e) => parse_date(e, "end_date")? + DAY_MS,
        None => now_ms() + 1,
    };
    let from = match &r.start_date {
        Some(s) => parse_date(s, "start_date")?,
        None => until - 30 * DAY_MS,
    };
    if from >= until {
        return Err(ApiError::bad_request("start_date must not be after end_date"));
    }
    if until - from > 366 * DAY_MS {
        return Err(ApiError::bad_request("date range must not exceed 366 days"));
    }
    Ok((from, until))
}

pub async fn list_feedback(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    Query(r): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let tenant = authenticate(&state, &headers).await?;
    let (from, until) = range(&r)?;
    let items = state
        .tenants
        .store()
        .list_feedback(&tenant.tenant_id, from, until)
        .await?;
    Ok(Json(
        json!({"tenant_id": tenant.tenant_id, "count": items.len(), "feedback": items}),
    ))
}

pub async fn feedback_stats(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    Query(r): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let tenant = authenticate(&state, &headers).await?;
    let (from, until) = range(&r)?;
    let stats = state
        .tenants
        .store()
        .feedback_stats(&tenant.tenant_id, from, until)
        .await?;
    Ok(Json(json!({
        "tenant_id": tenant.tenant_id, "from_ms": from, "until_ms": until,
        "count": stats.count, "average_rating": stats.average_rating,
        "helpful_ratio": stats.helpful_ratio, "by_rating": stats.by_rating
    })))
}

#[derive(Debug, Deserialize)]
pub struct TicketQuery {
    ticket_id: Option<String>,
}

pub async fn enhancements_by_ticket(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    Query(q): Query<TicketQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant = authenticate(&state, &headers).await?;
    let ticket = q
        .ticket_id
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("query parameter ticket_id is required"))?;
    let rows = state
        .tenants
        .store()
        .history_by_ticket(&tenant.tenant_id, &ticket)
        .await?;
    Ok(Json(
        json!({"tenant_id": tenant.tenant_id, "ticket_id": ticket, "enhancements": rows}),
    ))
}

pub async fn enhancement_by_job(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = authenticate(&state, &headers).await?;
    let row = state
        .tenants
        .store()
        .history_by_job(&tenant.tenant_id, &job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no enhancement job '{job_id}' for this tenant")))?;
    Ok(Json(json!(row)))
}

pub async fn lag(State(state): State<Arc<IngestState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authenticate_viewer(&state, &headers)?;
    state
        .ops
        .lag()
        .await
        .map(Json)
        .map_err(|e| ApiError::unavailable("broker_unavailable", e))
}

#[derive(Debug, Deserialize)]
pub struct DlqQuery {
    stage: Option<String>,
    limit: Option<usize>,
}

const STAGES: &[&str] = &["validate", "context", "synthesize", "update", "record"];

fn stage_param(stage: Option<&str>) -> Result<&str, ApiError> {
    let s = stage.ok_or_else(|| ApiError::bad_request(format!("stage is required: one of {}", STAGES.join(", "))))?;
    if !STAGES.contains(&s) {
        return Err(ApiError::bad_request(format!(
            "unknown stage '{s}': one of {}",
            STAGES.join(", ")
        )));
    }
    Ok(s)
}

pub async fn dlq_list(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    Query(q): Query<DlqQuery>,
) -> Result<Json<Value>, ApiError> {
    authenticate_viewer(&state, &headers)?;
    let stage = stage_param(q.stage.as_deref())?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    state
        .ops
        .dlq_list(stage, limit)
        .await
        .map(Json)
        .map_err(|e| ApiError::unavailable("broker_unavailable", e))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    stage: String,
    /// `[{"partition": p, "offset": o}]`: exactly these, even if retried
    /// before; absent: every record not retried before that the filters select.
    records: Option<Vec<HashMap<String, i64>>>,
    tenant: Option<String>,
    ticket: Option<String>,
    /// `retryable` or `permanent`.
    error_class: Option<String>,
    /// Epoch ms: only dead letters written at or after it.
    from_ms: Option<i64>,
    /// Epoch ms: stop at the first dead letter written at or after it.
    to_ms: Option<i64>,
    /// List what would be re-sent; send and remember nothing.
    dry_run: Option<bool>,
}

pub async fn dlq_retry(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authenticate_admin(&state, &headers)?;
    let body: RetryBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid retry body: {e}")))?;
    let stage = stage_param(Some(&body.stage))?;
    let records = match body.records {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|r| match (r.get("partition"), r.get("offset")) {
                    (Some(p), Some(o)) if *p >= 0 && *p <= i64::from(i32::MAX) && *o >= 0 => Ok((*p as i32, *o)),
                    _ => Err(ApiError::bad_request(
                        "each record needs a non-negative partition and offset",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let filtered = body.tenant.is_some()
        || body.ticket.is_some()
        || body.error_class.is_some()
        || body.from_ms.is_some()
        || body.to_ms.is_some();
    if records.is_some() && filtered {
        return Err(ApiError::bad_request(
            "records names exact dead letters: tenant, ticket, error_class, from_ms and to_ms do not apply to it",
        ));
    }
    if let Some(c) = body
        .error_class
        .as_deref()
        .filter(|c| !["retryable", "permanent"].contains(c))
    {
        return Err(ApiError::bad_request(format!(
            "error_class '{c}' must be retryable or permanent"
        )));
    }
    if let (Some(f), Some(t)) = (body.from_ms, body.to_ms) {
        if f >= t {
            return Err(ApiError::bad_request("from_ms must be before to_ms"));
        }
    }
    let request = crate::DlqRetryRequest {
        records,
        tenant: body.tenant,
        ticket: body.ticket,
        error_class: body.error_class,
        from_ms: body.from_ms,
        to_ms: body.to_ms,
        dry_run: body.dry_run.unwrap_or(false),
    };
    state
        .ops
        .dlq_retry(stage, request)
        .await
        .map(Json)
        .map_err(|e| ApiError::unavailable("broker_unavailable", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("admin-token-1", "admin-token-1"));
        assert!(!token_matches("admin-token-1", "admin-token-2"));
        assert!(!token_matches("admin-token", "admin-token-1"));
        assert!(!token_matches("", "admin-token-1"));
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(parse_date("1970-01-02", "d").unwrap(), DAY_MS);
        assert_eq!(parse_date("2024-02-29", "d").unwrap(), 1_709_164_800_000);
        assert!(parse_date("2023-02-29", "d").is_err());
        assert!(parse_date("2024-13-01", "d").is_err());
        assert!(parse_date("24-1-1", "d").is_err());
        assert!(parse_date("yesterday", "d").is_err());
    }
}
