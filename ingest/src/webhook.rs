//! `POST /webhooks/servicedesk/{tenant_id}`.
//!
//! Checks, in order: the source address's budget of failed authentication
//! (429 `source_rate_limited`, before any store or HMAC work; see
//! [`crate::sources`]), signature headers present (401), body size (413),
//! JSON content type (415), a tenant id matching `^[A-Za-z0-9_-]{1,64}$`,
//! signature and timestamp with an existing tenant (403 `forbidden`, the
//! four indistinguishable; a 401, 413, 415 or 403 here is charged to the
//! source's budget), a suspended tenant (403
//! `tenant_suspended`, only once the signature verified, so strangers learn
//! nothing; nothing is written to Kafka; seen within the tenant cache's TTL
//! of a `tenants suspend`), JSON syntax (400), required fields
//! (422), the tenant's ingest rate (429), a repeated `webhook-id` (the first
//! job's ids, 202), then the broker's acknowledgement (202, or 503).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use processors::producer::ProduceError;
use processors::trace;
use schemas::{Codec, JobMeta, WebhookReceived};
use serde_json::{json, Value};
use sinks::metrics::metrics;
use sinks::now_ms;
use sinks::store::{is_valid_tenant_id, Tenant, WebhookClaim, WebhookSecrets};
use sinks::Secret;
use tracing::{info, warn, Instrument};

use crate::error::ApiError;
use crate::payload::{parse_webhook, PayloadError, WebhookFields};
use crate::signature::verify;
use crate::IngestState;

/// A pending `webhook-id` claim older than this is taken over (its writer died).
const STALE_CLAIM_MS: i64 = 60_000;
/// An oversized body is read (and thrown away) up to this many times the
/// limit before the `413` is sent: a server that answers and closes while
/// the sender is still writing makes the kernel reset the connection, and
/// the sender sees a reset instead of its `413`.
const DRAIN_FACTOR: usize = 16;
/// ... and for at most this long.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and discards what is left of a body, bounded in bytes and time.
async fn drain(body: Body, max_bytes: usize) {
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > max_bytes {
                break;
            }
        }
    })
    .await;
}

/// Reads the body up to `max` bytes; on more, drains the rest (bounded)
/// and returns `None`.
async fn read_limited(body: Body, max: usize) -> Option<axum::body::Bytes> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return None;
        };
        if buf.len() + chunk.len() > max {
            let cap = max.saturating_mul(DRAIN_FACTOR);
            let rest = Body::from_stream(stream);
            drain(rest, cap).await;
            return None;
        }
        buf.extend_from_slice(&chunk);
    }
    Some(buf.into())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "webhook signature verification failed (unknown tenant, bad signature or timestamp outside tolerance)",
    )
}

/// A suspended tenant's (correctly signed) webhook.
fn suspended(tenant_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "tenant_suspended",
        format!("tenant '{tenant_id}' is suspended: webhooks are refused until an operator resumes it"),
    )
}

/// Checks the required fields; returns (ticket id, event).
pub fn required_fields(body: &Value) -> Result<(String, String), ApiError> {
    crate::payload::required_fields(body)
        .map(|f| (f.ticket_id, f.event))
        .map_err(payload_error)
}

fn payload_error(e: PayloadError) -> ApiError {
    match e {
        PayloadError::Malformed(m) => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", m),
        PayloadError::Field(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "missing_field", m),
    }
}

/// The route of the webhook endpoint, as the server span names it.
const ROUTE: &str = "/webhooks/servicedesk/{tenant_id}";

/// The server span of one webhook request: a child of the request's own
/// `traceparent` header when it has one, else the root of the job's trace.
fn server_span(tenant_id: &str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "webhook",
        tenant_id = %tenant_id,
        ticket_id = tracing::field::Empty,
        job_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        otel.name = %format_args!("POST {ROUTE}"),
        otel.kind = "server",
    );
    trace::set_remote_parent(&span, header(headers, "traceparent"));
    trace::attr(&span, "http.request.method", "POST");
    trace::attr(&span, "http.route", ROUTE);
    trace::attr(&span, "url.scheme", "http");
    trace::attr(&span, "url.path", format!("/webhooks/servicedesk/{tenant_id}"));
    if let Some(host) = header(headers, "host") {
        let (address, port) = match host.rsplit_once(':') {
            Some((a, p)) if p.parse::<u16>().is_ok() => (a, p.parse::<i64>().ok()),
            _ => (host, None),
        };
        trace::attr(&span, "server.address", address.to_string());
        if let Some(port) = port {
            trace::attr(&span, "server.port", port);
        }
    }
    if let Some(agent) = header(headers, "user-agent") {
        trace::attr(&span, "user_agent.original", agent.to_string());
    }
    span
}

pub async fn receive(
    State(state): State<Arc<IngestState>>,
    Path(tenant_id): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let source = state.sources.source_of(peer.map(|p| p.0 .0), &headers);
    // Ids outside the documented pattern are never echoed into spans.
    let shown_id = if is_valid_tenant_id(&tenant_id) {
        tenant_id.as_str()
    } else {
        "invalid"
    };
    let span = server_span(shown_id, &headers);
    let result = handle(&state, &tenant_id, source, &headers, body)
        .instrument(span.clone())
        .await;
    let status = match &result {
        Ok(_) => StatusCode::ACCEPTED,
        Err(e) => e.status,
    };
    trace::attr(&span, "http.response.status_code", i64::from(status.as_u16()));
    if let Err(e) = &result {
        // Server spans fail on 5xx only (a 4xx is the client's error).
        if status.is_server_error() {
            trace::set_error(&span, e.code, e.message.as_str());
        }
    }
    metrics()
        .webhook_request_duration
        .with_label_values::<&str>(&[])
        .observe(started.elapsed().as_secs_f64());
    // Unknown tenants are not labelled by name (unbounded label values);
    // only the cache is asked, never the store.
    let known = state.tenants.is_known(&tenant_id);
    let tenant_label = if known { tenant_id.as_str() } else { "unknown" };
    let outcome = match &result {
        Ok((_, dup)) if *dup => "duplicate",
        Ok(_) => "accepted",
        Err(e) => e.code,
    };
    metrics()
        .webhooks_received
        .with_label_values(&[tenant_label, outcome])
        .inc();
    match result {
        Ok((body, _)) => (StatusCode::ACCEPTED, Json(body)).into_response(),
        Err(e) => {
            if e.status.is_server_error() {
                warn!(tenant_id = %shown_id, code = e.code, message = %e.message, "webhook refused");
            }
            e.into_response()
        }
    }
}

async fn handle(
    state: &IngestState,
    tenant_id: &str,
    source: IpAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Value, bool), ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "Ticketflow is shutting down; retry shortly",
        ));
    }
    // Before any store or HMAC work: a source that keeps failing
    // authentication waits (ingest::sources) — except for a tenant this
    // process already knows (no store work; one HMAC over a bounded body):
    // its correctly signed webhooks still go through, so strangers sharing
    // an address with SDP (Zoho's egress, a NAT) cannot lock a tenant out.
    let over_budget = state.sources.check(source).err();
    if let Some(retry_in) = over_budget {
        if !state.tenants.is_known(tenant_id) {
            return Err(ApiError::source_rate_limited(retry_in));
        }
    }
    let (tenant, id, bytes) = match authenticate(state, tenant_id, headers, body).await {
        Ok(ok) => ok,
        Err(e) => {
            // The store being down is not the sender's failure.
            if e.status != StatusCode::SERVICE_UNAVAILABLE {
                state.sources.charge(source);
            }
            return Err(over_budget.map_or(e, ApiError::source_rate_limited));
        }
    };
    accept(state, tenant, id, headers, bytes).await
}

/// Everything up to a verified signature: headers, body size, content
/// type, tenant id, tenant and signature. Returns the tenant, the
/// `webhook-id` and the body.
async fn authenticate<'h>(
    state: &IngestState,
    tenant_id: &str,
    headers: &'h HeaderMap,
    body: Body,
) -> Result<(Arc<Tenant>, &'h str, axum::body::Bytes), ApiError> {
    let (Some(id), Some(ts), Some(sigs)) = (
        header(headers, "webhook-id"),
        header(headers, "webhook-timestamp"),
        header(headers, "webhook-signature"),
    ) else {
        let missing: Vec<&str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .into_iter()
            .filter(|h| header(headers, h).is_none())
            .collect();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_signature_headers",
            format!("missing Standard Webhooks header(s): {}", missing.join(", ")),
        ));
    };
    let max = state.settings.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds {max} bytes"),
        )
    };
    if header(headers, "content-length")
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l > max)
    {
        drain(body, max.saturating_mul(DRAIN_FACTOR)).await;
        return Err(too_large());
    }
    let bytes = read_limited(body, max).await.ok_or_else(too_large)?;
    let content_type = header(headers, "content-type").unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type must be application/json, got '{content_type}'"),
        ));
    }

    // An id outside the documented pattern is refused like an unknown
    // tenant, before the store; a valid unknown id is cached (bounded).
    if !is_valid_tenant_id(tenant_id) {
        info!(
            reason = "tenant id outside the documented pattern",
            "webhook signature rejected"
        );
        return Err(forbidden());
    }
    let tenant = state.tenants.get(tenant_id).await?;
    // An unknown tenant costs the same HMAC work as a known one.
    let dummy = WebhookSecrets {
        current: Secret::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        previous: None,
        previous_valid_until_ms: 0,
    };
    let secrets = tenant.as_ref().map(|t| &t.webhook_secrets).unwrap_or(&dummy);
    let now = now_ms();
    let verified = verify(
        secrets.valid_at(now),
        id,
        ts,
        sigs,
        &bytes,
        now / 1000,
        state.settings.tolerance.as_secs(),
    );
    let tenant = match (tenant, verified) {
        (Some(t), Ok(())) => t,
        (_, Err(e)) => {
            info!(tenant_id, reason = %e, "webhook signature rejected");
            return Err(forbidden());
        }
        (None, Ok(())) => return Err(forbidden()),
    };
    Ok((tenant, id, bytes))
}

/// A webhook whose signature verified: suspension, body, the tenant's
/// rate, the `webhook-id` claim, then the broker.
async fn accept(
    state: &IngestState,
    tenant: Arc<Tenant>,
    id: &str,
    headers: &HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<(Value, bool), ApiError> {
    let tenant_id = tenant.tenant_id.as_str();
    let now = now_ms();
    // Only a sender holding the tenant's secret learns that it is suspended
    // (strangers get the same `forbidden` as for an unknown tenant). The
    // operator's reason stays internal; the record is never written.
    if tenant.suspended.is_some() {
        info!(tenant_id, "webhook refused: tenant suspended");
        return Err(suspended(tenant_id));
    }

    let WebhookFields { ticket_id, event } = parse_webhook(&bytes).map_err(payload_error)?;
    if let Err(secs) = state.limiter.check(tenant_id) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("tenant '{tenant_id}' is over its ingest rate"),
        )
        .retry_after(secs));
    }

    let offered_job = uuid::Uuid::now_v7().to_string();
    let offered_corr = header(headers, "x-correlation-id")
        .filter(|c| c.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let store = state.tenants.store();
    let (job_id, correlation_id) = match trace::store_call(
        "claim_webhook",
        store.claim_webhook(tenant_id, id, &offered_job, &offered_corr, STALE_CLAIM_MS),
    )
    .await?
    {
        WebhookClaim::Proceed { job_id, correlation_id } => (job_id, correlation_id),
        WebhookClaim::Accepted { job_id, correlation_id } => {
            return Ok((
                json!({"job_id": job_id, "correlation_id": correlation_id, "duplicate": true}),
                true,
            ));
        }
        WebhookClaim::InFlight => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "in_flight",
                format!("webhook-id '{id}' is being accepted by another request; retry"),
            )
            .retry_after(1));
        }
    };

    let span = tracing::Span::current();
    span.record("ticket_id", ticket_id.as_str());
    span.record("job_id", job_id.as_str());
    span.record("correlation_id", correlation_id.as_str());
    let meta = JobMeta {
        job_id: job_id.clone(),
        correlation_id: correlation_id.clone(),
        tenant_id: tenant.tenant_id.clone(),
        ticket_id: ticket_id.clone(),
        event,
        webhook_id: id.to_string(),
        received_at_ms: now,
    };
    let key = meta.key();
    let record = WebhookReceived {
        meta,
        payload_json: String::from_utf8_lossy(&bytes).into_owned(),
    };
    let value = match Codec::builtin().encode(&record) {
        Ok(v) => v,
        Err(e) => {
            store.release_webhook(tenant_id, id).await?;
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encode_failed",
                e.to_string(),
            ));
        }
    };
    let job_headers = processors::headers::JobHeaders {
        correlation_id: correlation_id.clone(),
        tenant_id: tenant.tenant_id.clone(),
        job_id: job_id.clone(),
        traceparent: header(headers, "traceparent")
            .map(processors::headers::child_traceparent)
            .unwrap_or_else(processors::headers::new_traceparent),
        attempt: 1,
        replayed_from: None,
    };
    let sent = state
        .producer
        .send(
            &state.settings.webhooks_topic,
            &key,
            &value,
            job_headers.to_kafka(),
            state.settings.produce_timeout,
        )
        .await;
    match sent {
        Ok(_) => {
            trace::store_call("confirm_webhook", store.confirm_webhook(tenant_id, id)).await?;
            info!(tenant_id, ticket_id = %ticket_id, correlation_id = %correlation_id, job_id = %job_id, "webhook accepted");
            Ok((json!({"job_id": job_id, "correlation_id": correlation_id}), false))
        }
        Err(ProduceError::Permanent(e)) => {
            // Refused for good: retrying the same body cannot succeed.
            store.release_webhook(tenant_id, id).await?;
            warn!(tenant_id, error = %e, bytes = value.len(), "broker refused the webhook's record");
            if e.contains("too large") || e.contains("TooLarge") || e.contains("MessageSize") {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the broker refused the record as too large ({} bytes): {e}",
                        value.len()
                    ),
                ))
            } else {
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "broker_refused",
                    format!("the broker refused the record: {e}"),
                ))
            }
        }
        Err(ProduceError::Transient(e)) => {
            // Not acknowledged: the sender must retry; the retry reuses this
            // job's ids in case the broker wrote the record after all.
            store.release_webhook(tenant_id, id).await?;
            warn!(tenant_id, error = %e, "broker did not acknowledge webhook");
            Err(ApiError::unavailable(
                "broker_unavailable",
                format!("the broker did not acknowledge the record: {e}"),
            ))
        }
    }
}
