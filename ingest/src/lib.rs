//! The HTTP front door (axum): signed SDP webhooks into Kafka, the
//! feedback and history API for tenants, admin operations (lag, DLQ),
//! health, metrics and a dashboard page.
//!
//! A webhook is answered `202` only after the broker acknowledged its
//! record (`acks=all`, idempotent producer); when the broker cannot, `503`.
//! Kafka administration (lag, DLQ) is reached through the [`Operations`]
//! trait that `topology` implements, so this crate holds no topic layout.
//!
//! Layout: [`signature`] (Standard Webhooks), [`payload`] (the webhook
//! body), [`webhook`] (the ingest handler), [`api`] (feedback, history,
//! admin), [`sources`] (the per-source limit of failed authentication),
//! [`health`], [`error`].
//!
//! Strangers: tenant ids outside `^[A-Za-z0-9_-]{1,64}$` are refused like
//! unknown tenants before any lookup; unknown ids are cached in a cache
//! bounded in bytes; a source that keeps failing authentication gets `429`
//! before any store or HMAC work; error bodies carry a code and a generic
//! message, the detail goes to the log.

pub mod api;
pub mod error;
pub mod health;
pub mod payload;
pub mod ratelimit;
pub mod signature;
pub mod sources;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use processors::producer::DurableProducer;
use serde_json::Value;
use sinks::store::TenantCache;
use sinks::Secret;
use tokio_util::sync::CancellationToken;

/// Kafka-side operations the admin API and health checks need.
#[async_trait]
pub trait Operations: Send + Sync {
    /// Consumer lag per group, topic and partition, as JSON.
    async fn lag(&self) -> Result<Value, String>;
    /// Records on a stage's dead-letter topic (newest last), as JSON.
    async fn dlq_list(&self, stage: &str, limit: usize) -> Result<Value, String>;
    /// Re-sends dead-lettered records to their stage's input; returns a summary.
    async fn dlq_retry(&self, stage: &str, request: DlqRetryRequest) -> Result<Value, String>;
    /// Whether the broker answers metadata requests.
    async fn kafka_ok(&self) -> Result<(), String>;
    /// State of the external systems as seen by this process (`llm`, `servicedesk`).
    fn external_checks(&self) -> Vec<(&'static str, bool, String)>;
}

/// What `POST /api/v1/dlq/retry` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqRetryRequest {
    /// Exactly these records (partition, offset), even if retried before;
    /// filters do not apply and nothing is remembered. `None`: every record
    /// not retried before that the filters select.
    pub records: Option<Vec<(i32, i64)>>,
    pub tenant: Option<String>,
    pub ticket: Option<String>,
    /// `retryable` or `permanent`.
    pub error_class: Option<String>,
    /// Only dead letters written at or after this time (epoch ms).
    pub from_ms: Option<i64>,
    /// Stop at the first dead letter written at or after this time (epoch ms).
    pub to_ms: Option<i64>,
    /// List what would be re-sent; send and remember nothing.
    pub dry_run: bool,
}

/// The process's own health beyond broker and store (stage tasks,
/// producer, assignments), shown on `/health/ready`.
pub trait ProcessChecks: Send + Sync {
    /// (check name, Ok or the reason it fails).
    fn checks(&self) -> Vec<(String, Result<(), String>)>;
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// `TICKETFLOW_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// Allowed clock skew of `webhook-timestamp`.
    pub tolerance: Duration,
    /// `TICKETFLOW_ADMIN_TOKEN`; admin endpoints answer 401 without it.
    pub admin_token: Option<Secret>,
    /// `TICKETFLOW_VIEWER_TOKEN`: read-only operator access (dashboard, lag, DLQ list).
    pub viewer_token: Option<Secret>,
    /// Webhooks per second each tenant may send (burst: twice that).
    pub tenant_rate_per_sec: f64,
    /// Longest wait for the broker's acknowledgement before answering 503.
    pub produce_timeout: Duration,
    /// Topic webhooks are written to.
    pub webhooks_topic: String,
    /// The per-source budget of failed authentication ([`sources`]).
    pub source_limits: sources::SourceLimits,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_body_bytes: 1024 * 1024,
            tolerance: Duration::from_secs(300),
            admin_token: None,
            viewer_token: None,
            tenant_rate_per_sec: 1000.0,
            produce_timeout: Duration::from_secs(10),
            webhooks_topic: "ticketflow.webhooks".into(),
            source_limits: sources::SourceLimits::default(),
        }
    }
}

pub struct IngestState {
    pub tenants: TenantCache,
    pub producer: Arc<DurableProducer>,
    pub settings: IngestSettings,
    pub ops: Arc<dyn Operations>,
    pub limiter: ratelimit::TenantLimiter,
    /// Failed authentication per source address.
    pub sources: sources::SourceLimiter,
    /// Set on shutdown: new webhooks get 503 while the stages drain.
    pub draining: AtomicBool,
    /// Set by the process that runs ingest: its own health checks.
    pub process: std::sync::OnceLock<Arc<dyn ProcessChecks>>,
}

impl IngestState {
    pub fn new(
        tenants: TenantCache,
        producer: Arc<DurableProducer>,
        settings: IngestSettings,
        ops: Arc<dyn Operations>,
    ) -> Arc<Self> {
        let limiter = ratelimit::TenantLimiter::new(settings.tenant_rate_per_sec);
        let sources = sources::SourceLimiter::new(settings.source_limits.clone());
        Arc::new(IngestState {
            tenants,
            producer,
            settings,
            ops,
            limiter,
            sources,
            draining: AtomicBool::new(false),
            process: std::sync::OnceLock::new(),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Around every endpoint that takes a token: a source whose budget of
/// failed authentication is spent gets `429` before the handler (and its
/// store lookup) runs; a `401` answer is charged to the source. (Webhooks
/// do the same inside their handler, where more answers count as failed.)
async fn limit_failed_auth(
    State(state): State<Arc<IngestState>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request: Request,
    next: Next,
) -> Response {
    let source = state.sources.source_of(peer.map(|p| p.0 .0), request.headers());
    if let Err(secs) = state.sources.check(source) {
        return error::ApiError::source_rate_limited(secs).into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        state.sources.charge(source);
    }
    response
}

pub fn router(state: Arc<IngestState>) -> Router {
    let authenticated = Router::new()
        .route("/api/v1/feedback", post(api::add_feedback).get(api::list_feedback))
        .route("/api/v1/feedback/stats", get(api::feedback_stats))
        .route("/api/v1/enhancements", get(api::enhancements_by_ticket))
        .route("/api/v1/enhancements/{job_id}", get(api::enhancement_by_job))
        .route("/api/v1/lag", get(api::lag))
        .route("/api/v1/dlq", get(api::dlq_list))
        .route("/api/v1/dlq/retry", post(api::dlq_retry))
        .route("/dashboard", get(health::dashboard))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limit_failed_auth));
    Router::new()
        .route("/webhooks/servicedesk/{tenant_id}", post(webhook::receive))
        .merge(authenticated)
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/enhancement", get(health::enhancement))
        .route("/metrics", get(health::metrics_text))
        .fallback(error::not_found)
        .with_state(state)
}

/// What a process that does not run ingest serves on its ops address:
/// health, metrics, lag, the DLQ listing and the dashboard — no webhooks
/// and no tenant API.
pub fn ops_router(state: Arc<IngestState>) -> Router {
    let authenticated = Router::new()
        .route("/api/v1/lag", get(api::lag))
        .route("/api/v1/dlq", get(api::dlq_list))
        .route("/dashboard", get(health::dashboard))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limit_failed_auth));
    Router::new()
        .merge(authenticated)
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/enhancement", get(health::enhancement))
        .route("/metrics", get(health::metrics_text))
        .fallback(error::not_found)
        .with_state(state)
}

/// Serves the ops router until `shutdown` is cancelled (then readiness
/// answers 503 while the process drains).
pub async fn serve_ops(
    listener: tokio::net::TcpListener,
    state: Arc<IngestState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = ops_router(state.clone());
    serve_app(
        listener,
        app,
        state,
        shutdown,
        "ops endpoints listening (health, metrics, lag, dashboard)",
    )
    .await
}

/// Serves until `shutdown` is cancelled. From cancellation on, webhooks get
/// 503 (the caller keeps the server up while the stages drain).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<IngestState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state.clone());
    serve_app(listener, app, state, shutdown, "ingest listening").await
}

async fn serve_app(
    listener: tokio::net::TcpListener,
    app: Router,
    state: Arc<IngestState>,
    shutdown: CancellationToken,
    what: &'static str,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "{what}");
    let graceful = async move {
        shutdown.cancelled().await;
        state.draining.store(true, Ordering::Relaxed);
    };
    // With the peer address: the per-source limit of failed authentication.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(graceful)
        .await
}
