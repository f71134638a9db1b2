//! The five stages. Each is a plain struct implementing [`Stage`] over
//! typed records; the runtime handles Kafka.

mod context;
mod record;
mod synthesize;
mod text;
mod update;
mod validate;

pub use context::search as context_search;
pub use context::ContextStage;
pub use record::RecordStage;
pub use synthesize::{SynthesizeStage, PROMPT_VERSION};
pub use update::{job_marker, UpdateStage};
pub use validate::ValidateStage;

use std::sync::Arc;
use std::time::Duration;

use schemas::{Codec, CodecError, JobMeta, Record};
use sinks::breaker::CircuitBreaker;
use sinks::llm::LlmClient;
use sinks::metrics::metrics;
use sinks::now_ms;
use sinks::servicedesk::{SdpClient, SdpError, SdpGuards, DEFAULT_RATE_LIMIT_BACKOFF};
use sinks::store::{HistoryRow, HistoryStatus, StoreError, Tenant, TenantCache};
use tracing::info;

use crate::runtime::{StageFailure, StageOutput};

/// Settings the stages read (from ARCHITECTURE §6 variables).
#[derive(Debug, Clone)]
pub struct StageSettings {
    /// Overall budget for gathering context (`CONTEXT_TIMEOUT_MS`).
    pub context_timeout: Duration,
    /// Timeout of each context source.
    pub context_source_timeout: Duration,
    /// `DISABLE_LLM_SYNTHESIS`.
    pub disable_llm: bool,
    /// Longest LLM request (`LLM_TIMEOUT_MS`); a timeout is transient.
    pub llm_timeout: Duration,
    /// Attempts a record gets in a stage: the first try plus one per retry
    /// tier (`TICKETFLOW_RETRY_TIERS`). Synthesize falls back only after
    /// the last one.
    pub max_attempts: u32,
    /// `LLM_MAX_PROMPT_TOKENS`: the prompt is cut to fit this estimate.
    pub llm_max_prompt_tokens: usize,
}

impl Default for StageSettings {
    fn default() -> Self {
        StageSettings {
            context_timeout: Duration::from_secs(30),
            context_source_timeout: Duration::from_secs(10),
            disable_llm: false,
            llm_timeout: Duration::from_secs(60),
            max_attempts: 4,
            llm_max_prompt_tokens: synthesize::DEFAULT_MAX_PROMPT_TOKENS,
        }
    }
}

/// What the stages share: stores, clients, breakers, settings.
pub struct Services {
    pub tenants: TenantCache,
    pub sdp: SdpClient,
    pub llm: LlmClient,
    /// Per-tenant SDP circuit breakers and rate limits.
    pub sdp_guards: SdpGuards,
    pub llm_breaker: CircuitBreaker,
    pub settings: StageSettings,
}

pub(crate) fn decode<R: Record>(bytes: &[u8]) -> Result<R, StageFailure> {
    Codec::builtin()
        .decode::<R>(bytes)
        .map_err(|e: CodecError| StageFailure::permanent(format!("poison record: {e}")))
}

pub(crate) fn encode<R: Record>(record: &R) -> Result<Vec<u8>, StageFailure> {
    Codec::builtin()
        .encode(record)
        .map_err(|e| StageFailure::permanent(e.to_string()))
}

pub(crate) fn store_failure(e: StoreError) -> StageFailure {
    StageFailure {
        error: e.to_string(),
        hint: e.retry_hint(),
    }
}

pub(crate) async fn tenant(services: &Services, tenant_id: &str) -> Result<Arc<Tenant>, StageFailure> {
    services
        .tenants
        .get(tenant_id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| {
            StageFailure::permanent(format!(
                "tenant '{tenant_id}' does not exist (removed after the webhook was accepted?)"
            ))
        })
}

/// The skip reason of a suspended tenant's records, `None` when active.
/// Each stage that would call SDP or the LLM checks it first, so a record
/// already queued when the tenant is suspended (seen within the tenant
/// cache's TTL) ends `skipped` without further calls.
pub(crate) fn suspension(tenant: &Tenant) -> Option<String> {
    tenant.suspended.as_ref().map(|r| format!("tenant suspended: {r}"))
}

/// The history row of a job that ends without a note, with the reason.
pub(crate) fn skipped_row(meta: &JobMeta, subject: Option<String>, reason: String) -> HistoryRow {
    HistoryRow {
        tenant_id: meta.tenant_id.clone(),
        job_id: meta.job_id.clone(),
        ticket_id: meta.ticket_id.clone(),
        correlation_id: meta.correlation_id.clone(),
        status: HistoryStatus::Skipped,
        method: None,
        error_message: Some(reason),
        failed_stage: None,
        subject,
        description: None,
        note_text: None,
        note_id: None,
        counts: Default::default(),
        timings: std::collections::HashMap::new(),
        received_at_ms: meta.received_at_ms,
        completed_at_ms: now_ms(),
        llm: Default::default(),
    }
}

/// Ends a job as `skipped` with `reason`: writes its history row (the
/// record stage is not involved) and consumes the record.
pub(crate) async fn skip(
    services: &Services,
    meta: &JobMeta,
    subject: Option<String>,
    reason: String,
) -> Result<StageOutput, StageFailure> {
    info!(reason = %reason, "event skipped");
    record_outcome(services, &skipped_row(meta, subject, reason)).await?;
    Ok(StageOutput::Done)
}

/// Writes a job's history row and counts its outcome.
pub(crate) async fn record_outcome(services: &Services, row: &HistoryRow) -> Result<(), StageFailure> {
    crate::trace::store_call("put_history", services.tenants.store().put_history(row))
        .await
        .map_err(store_failure)?;
    metrics()
        .enhancements
        .with_label_values(&[&row.tenant_id, row.status.as_str()])
        .inc();
    Ok(())
}

pub(crate) fn elapsed_ms(since: std::time::Instant) -> i64 {
    since.elapsed().as_millis() as i64
}

/// Gets the tenant's permission to make `calls` SDP requests: its circuit
/// must be closed (or probing) and its rate limit must allow the calls soon.
/// A short wait is slept here; a longer one defers the record (throttled,
/// no attempt used) so it holds no in-flight slot meanwhile.
pub(crate) async fn sdp_permit(services: &Services, tenant: &Tenant, calls: u32) -> Result<(), StageFailure> {
    let guards = &services.sdp_guards;
    if let Err(open) = guards.acquire(&tenant.tenant_id) {
        return Err(StageFailure::retryable(
            open.to_string(),
            Some(open.retry_in.max(Duration::from_secs(1))),
        ));
    }
    // The limit is shared through the store by every process calling this
    // tenant's SDP (see `sinks::servicedesk::guard`).
    let store = services.tenants.store();
    let reserved = guards
        .tenant(&tenant.tenant_id)
        .reserve(
            store.as_ref(),
            &tenant.tenant_id,
            tenant.requests_per_minute,
            calls,
            guards.max_wait,
        )
        .await
        .map_err(store_failure)?;
    match reserved {
        Ok(wait) if wait.is_zero() => Ok(()),
        Ok(wait) => {
            tokio::time::sleep(wait).await;
            Ok(())
        }
        Err(t) => Err(StageFailure::throttled(t.to_string(), t.retry_in)),
    }
}

/// The skip reason of a job whose ticket SDP no longer has (404).
pub(crate) const TICKET_DELETED: &str = "ticket deleted";

/// Whether an SDP answer says the ticket is gone: the job ends `skipped`
/// ([`TICKET_DELETED`]), not `failed` (an expected event, not an alert).
pub(crate) fn is_deleted(e: &SdpError) -> bool {
    matches!(e, SdpError::NotFound { .. })
}

/// Reports an SDP call's outcome to the tenant's breaker and limiter.
pub(crate) fn sdp_outcome<T>(services: &Services, tenant_id: &str, r: &Result<T, SdpError>) {
    let guards = &services.sdp_guards;
    match r {
        Ok(_) => guards.record_success(tenant_id),
        Err(e) if e.is_outage() => guards.record_failure(tenant_id),
        Err(SdpError::RateLimited { retry_after, .. }) => guards
            .tenant(tenant_id)
            .back_off(retry_after.unwrap_or(DEFAULT_RATE_LIMIT_BACKOFF)),
        // A 401 or 404 says nothing about SDP's health.
        Err(_) => guards.record_success(tenant_id),
    }
}
