//! The stores behind traits: tenants, enhancement history, technician
//! feedback, and the idempotency records that make delivery exactly-once in
//! effect. Every method names one tenant (the partition key in ScyllaDB);
//! nothing reads across tenants except the tenant list itself.
//!
//! [`EmbeddedStore`] (libSQL under the data dir, shared with the broker's
//! own libSQL build) is the default; it can be opened by several processes
//! at once (WAL, busy timeout), so `ticketflow tenants` works while `run` is
//! up and two `run` processes on one host can share one data dir.
//! [`ScyllaStore`] is used when `SCYLLA_NODES` is set. Both pass the same
//! contract suite (`sinks/tests/store_contract.rs`).

mod cache;
mod embedded;
mod ledger;
pub mod migrate;
mod scylla_store;
mod seal;
pub mod search;

use std::collections::HashMap;

use async_trait::async_trait;
use schemas::ContextCounts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::servicedesk::{SdpAuth, SdpTenant};
use crate::{RetryHint, Secret};

pub use cache::{is_valid_tenant_id, TenantCache, DEFAULT_NEGATIVE_CACHE_BYTES, MAX_TENANT_ID_LEN};
pub use embedded::EmbeddedStore;
pub use scylla_store::{
    bucket_of, classify_execution_error, parse_replication, ScyllaConfig, ScyllaStore, CLAIM_BUCKETS,
};
pub use seal::{is_sealed, SealError, Sealer};
pub use search::{DocKind, InventoryAsset, SearchDoc, SearchHit};

/// How long idempotency records are kept (ScyllaDB TTLs; the embedded
/// store deletes them on the same schedule and ignores expired ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `webhook-id` claims: longer than any sender's redelivery window
    /// (Standard Webhooks senders retry for up to about 3 days).
    pub webhook_claims: std::time::Duration,
    /// `(ticket, event)` claims.
    pub event_claims: std::time::Duration,
    /// One-note-per-job records: longer than any replay or retry of a job.
    pub note_records: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Retention {
            webhook_claims: std::time::Duration::from_secs(7 * DAY),
            event_claims: std::time::Duration::from_secs(30 * DAY),
            note_records: std::time::Duration::from_secs(30 * DAY),
        }
    }
}

/// What both stores are opened with besides their address.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Encrypts SDP tokens and webhook secrets at rest (a no-op without a
    /// master key).
    pub sealer: std::sync::Arc<Sealer>,
    pub retention: Retention,
    /// Rows fetched per page by list queries.
    pub page_size: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sealer: std::sync::Arc::new(Sealer::none()),
            retention: Retention::default(),
            page_size: 1000,
        }
    }
}

/// The UTC day (`YYYY-MM-DD`) of a millisecond timestamp: the time bucket
/// of the by-day partitions.
pub fn day_of(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    // Civil-from-days (Howard Hinnant's algorithm), valid for all i64 days here.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// The days (`YYYY-MM-DD`) from `from_ms` to `until_ms` (exclusive), newest
/// first; at most `max` of them.
pub fn days_between(from_ms: i64, until_ms: i64, max: usize) -> Vec<String> {
    const DAY: i64 = 86_400_000;
    if until_ms <= from_ms {
        return Vec::new();
    }
    let first = from_ms.div_euclid(DAY);
    let last = (until_ms - 1).div_euclid(DAY);
    (first..=last).rev().take(max).map(|d| day_of(d * DAY)).collect()
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("tenant '{0}' already exists")]
    TenantExists(String),
    #[error("tenant '{0}' does not exist")]
    NoSuchTenant(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store holds a row it cannot read: {0}")]
    Corrupt(String),
    /// The store refused the request itself (invalid query, schema
    /// mismatch, authentication): retrying the same request cannot help.
    #[error("store rejected the request: {0}")]
    Rejected(String),
    /// Tenant removal refused: data remains (use `--purge`).
    #[error("tenant '{0}' still has history, feedback or claims; remove it with --purge to delete them")]
    TenantHasData(String),
}

impl StoreError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            StoreError::Unavailable(_) => RetryHint::Retryable { after: None },
            StoreError::TenantExists(_)
            | StoreError::NoSuchTenant(_)
            | StoreError::Corrupt(_)
            | StoreError::Rejected(_)
            | StoreError::TenantHasData(_) => RetryHint::Permanent,
        }
    }
}

/// A tenant's webhook secrets: the current one, and during rotation the
/// previous one until its grace period ends.
#[derive(Debug, Clone)]
pub struct WebhookSecrets {
    pub current: Secret,
    pub previous: Option<Secret>,
    pub previous_valid_until_ms: i64,
}

impl WebhookSecrets {
    /// The secrets a signature may be made with at `now_ms`.
    pub fn valid_at(&self, now_ms: i64) -> impl Iterator<Item = &Secret> {
        let previous = self.previous.as_ref().filter(|_| now_ms < self.previous_valid_until_ms);
        std::iter::once(&self.current).chain(previous)
    }
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub tenant_id: String,
    pub sdp: SdpTenant,
    pub webhook_secrets: WebhookSecrets,
    /// SHA-256 (hex) of the tenant's API bearer token; the token itself is
    /// shown once and never stored.
    pub api_token_hash: String,
    /// ServiceDesk Plus API calls per minute allowed for this tenant.
    pub requests_per_minute: u32,
    /// Webhook event types this tenant wants enhanced.
    pub enabled_events: Vec<String>,
    /// Why the tenant is suspended (webhooks answered 403, stages skip its
    /// records); `None` when active.
    pub suspended: Option<String>,
    pub created_at_ms: i64,
}

impl Tenant {
    pub fn new(
        tenant_id: &str,
        base_url: &str,
        auth: SdpAuth,
        token: &str,
        webhook_secret: &str,
        api_token: &str,
    ) -> Self {
        Tenant {
            tenant_id: tenant_id.to_string(),
            sdp: SdpTenant {
                base_url: base_url.to_string(),
                auth,
                token: Secret::new(token),
                oauth: None,
            },
            webhook_secrets: WebhookSecrets {
                current: Secret::new(webhook_secret),
                previous: None,
                previous_valid_until_ms: 0,
            },
            api_token_hash: hash_token(api_token),
            requests_per_minute: 600,
            enabled_events: vec!["request_created".to_string()],
            suspended: None,
            created_at_ms: crate::now_ms(),
        }
    }
}

/// SHA-256 hex of an API token, as stored.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Outcome of one enhancement job, as recorded in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStatus {
    Success,
    Fallback,
    Skipped,
    Failed,
}

impl HistoryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryStatus::Success => "success",
            HistoryStatus::Fallback => "fallback",
            HistoryStatus::Skipped => "skipped",
            HistoryStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "success" => HistoryStatus::Success,
            "fallback" => HistoryStatus::Fallback,
            "skipped" => HistoryStatus::Skipped,
            "failed" => HistoryStatus::Failed,
            _ => return None,
        })
    }
}

/// One row of `enhancement_history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub tenant_id: String,
    pub job_id: String,
    pub ticket_id: String,
    pub correlation_id: String,
    pub status: HistoryStatus,
    /// `llm` or `fallback` where a note was written.
    pub method: Option<String>,
    pub error_message: Option<String>,
    pub failed_stage: Option<String>,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub note_text: Option<String>,
    pub note_id: Option<String>,
    pub counts: ContextCountsRow,
    pub timings: HashMap<String, i64>,
    pub received_at_ms: i64,
    pub completed_at_ms: i64,
    /// The LLM call behind the note, when one was made.
    #[serde(default)]
    pub llm: LlmUsageRow,
}

/// What the LLM call behind a note used (all `None` without a call).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmUsageRow {
    /// Prompt template version (`synthesize.rs` `PROMPT_VERSION`).
    pub prompt_version: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    /// USD, when the provider reports it.
    pub cost_usd: Option<f64>,
}

/// Context counts as stored (mirrors [`ContextCounts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextCountsRow {
    pub similar_tickets: i32,
    pub kb_articles: i32,
    pub ip_references: i32,
    pub context_nodes_success: i32,
    pub context_nodes_failed: i32,
}

impl From<&ContextCounts> for ContextCountsRow {
    fn from(c: &ContextCounts) -> Self {
        ContextCountsRow {
            similar_tickets: c.similar_tickets,
            kb_articles: c.kb_articles,
            ip_references: c.ip_references,
            context_nodes_success: c.nodes_success,
            context_nodes_failed: c.nodes_failed,
        }
    }
}

/// A technician's verdict on one enhancement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub feedback_id: String,
    pub tenant_id: String,
    pub job_id: String,
    pub ticket_id: String,
    /// 1 (useless) to 5 (excellent).
    pub rating: u8,
    pub helpful: Option<bool>,
    pub comment: Option<String>,
    pub technician: Option<String>,
    pub created_at_ms: i64,
}

/// Whether a job's note is on the ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteState {
    /// A post was started; it may or may not have reached SDP.
    Pending,
    Posted {
        note_id: String,
    },
}

/// Result of claiming a `webhook-id` at ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookClaim {
    /// Go on and write the record with these ids: the ones offered, or,
    /// when an earlier attempt was not acknowledged (or its writer died),
    /// that attempt's ids, so a record it may have written after all is the
    /// same job and posts no second note.
    Proceed { job_id: String, correlation_id: String },
    /// Already accepted: answer with the first job's ids.
    Accepted { job_id: String, correlation_id: String },
    /// Another request with this id is being written right now.
    InFlight,
}

#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    /// Replaces the tenant's settings; the API token index follows a changed
    /// token hash.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Removes the tenant. Without `purge` it refuses
    /// ([`StoreError::TenantHasData`]) while history, feedback or claims
    /// remain; with it, they are deleted first, so a tenant added later
    /// under the same id inherits nothing. `Ok(false)`: no such tenant.
    async fn remove_tenant(&self, tenant_id: &str, purge: bool) -> Result<bool, StoreError>;
    async fn tenant_by_api_token_hash(&self, hash: &str) -> Result<Option<Tenant>, StoreError>;
    /// Whether any history, feedback or (unexpired) claim of the tenant remains.
    async fn tenant_has_data(&self, tenant_id: &str) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Writes the row for `(tenant_id, job_id)`, replacing an earlier one.
    async fn put_history(&self, row: &HistoryRow) -> Result<(), StoreError>;
    async fn history_by_job(&self, tenant_id: &str, job_id: &str) -> Result<Option<HistoryRow>, StoreError>;
    /// Every row of one ticket, newest first.
    async fn history_by_ticket(&self, tenant_id: &str, ticket_id: &str) -> Result<Vec<HistoryRow>, StoreError>;
    /// Every row of one correlation id (a webhook and its replays), newest first.
    async fn history_by_correlation(
        &self,
        tenant_id: &str,
        correlation_id: &str,
    ) -> Result<Vec<HistoryRow>, StoreError>;
    /// Rows completed in `[from_ms, until_ms)`, newest first, at most `limit`.
    async fn history_between(
        &self,
        tenant_id: &str,
        from_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<HistoryRow>, StoreError>;
    /// The tenant's most recent rows, newest first.
    async fn recent_history(&self, tenant_id: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError> {
        self.history_between(tenant_id, 0, crate::now_ms() + 86_400_000, limit)
            .await
    }
}

/// Feedback over a time range, as the feedback stats API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackStats {
    pub count: usize,
    pub average_rating: Option<f64>,
    /// Share of answers to "was it helpful?" that said yes.
    pub helpful_ratio: Option<f64>,
    /// Count per rating, "1" to "5".
    pub by_rating: std::collections::BTreeMap<String, usize>,
}

impl FeedbackStats {
    pub fn of(items: &[Feedback]) -> Self {
        let count = items.len();
        let mut by_rating: std::collections::BTreeMap<String, usize> =
            (1..=5).map(|r: u8| (r.to_string(), 0)).collect();
        for f in items {
            *by_rating.entry(f.rating.to_string()).or_default() += 1;
        }
        let average_rating = (count > 0).then(|| items.iter().map(|f| f64::from(f.rating)).sum::<f64>() / count as f64);
        let answered: Vec<bool> = items.iter().filter_map(|f| f.helpful).collect();
        let helpful_ratio =
            (!answered.is_empty()).then(|| answered.iter().filter(|h| **h).count() as f64 / answered.len() as f64);
        FeedbackStats {
            count,
            average_rating,
            helpful_ratio,
            by_rating,
        }
    }
}

#[async_trait]
pub trait FeedbackStore: Send + Sync {
    async fn add_feedback(&self, feedback: &Feedback) -> Result<(), StoreError>;
    /// Feedback created in `[from_ms, until_ms)`, oldest first.
    async fn list_feedback(&self, tenant_id: &str, from_ms: i64, until_ms: i64) -> Result<Vec<Feedback>, StoreError>;
    async fn feedback_stats(&self, tenant_id: &str, from_ms: i64, until_ms: i64) -> Result<FeedbackStats, StoreError> {
        Ok(FeedbackStats::of(
            &self.list_feedback(tenant_id, from_ms, until_ms).await?,
        ))
    }
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn note_state(&self, tenant_id: &str, job_id: &str) -> Result<Option<NoteState>, StoreError>;
    async fn note_pending(&self, tenant_id: &str, job_id: &str, ticket_id: &str) -> Result<(), StoreError>;
    async fn note_posted(
        &self,
        tenant_id: &str,
        job_id: &str,
        ticket_id: &str,
        note_id: &str,
    ) -> Result<(), StoreError>;
    /// Claims `webhook_id` for a new job unless it was seen before. A claim
    /// released after a failed write, or left pending longer than
    /// `stale_after_ms` (its writer died), is taken over with its ids.
    async fn claim_webhook(
        &self,
        tenant_id: &str,
        webhook_id: &str,
        job_id: &str,
        correlation_id: &str,
        stale_after_ms: i64,
    ) -> Result<WebhookClaim, StoreError>;
    async fn confirm_webhook(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError>;
    /// Marks a claim whose record the broker did not acknowledge.
    async fn release_webhook(&self, tenant_id: &str, webhook_id: &str) -> Result<(), StoreError>;
    /// Claims `(ticket, event)` for `job_id`; returns the other job that
    /// claimed it first, if any.
    async fn claim_event(
        &self,
        tenant_id: &str,
        ticket_id: &str,
        event: &str,
        job_id: &str,
    ) -> Result<Option<String>, StoreError>;
}

/// Context search (see [`search`]): every call names one tenant and reads
/// or writes only that tenant's index and inventory.
#[async_trait]
pub trait SearchStore: Send + Sync {
    /// Indexes documents of one tenant; each replaces the tenant's document
    /// of the same kind and id (its old terms leave the index).
    async fn index_documents(&self, tenant_id: &str, kind: DocKind, docs: &[SearchDoc]) -> Result<(), StoreError>;
    /// The tenant's best `limit` documents of `kind` for `query` by BM25,
    /// best first, without the document `exclude`.
    async fn search_documents(
        &self,
        tenant_id: &str,
        kind: DocKind,
        query: &str,
        limit: usize,
        exclude: Option<&str>,
    ) -> Result<Vec<SearchHit>, StoreError>;
    /// Adds assets to the tenant's inventory; each replaces the asset of
    /// the same name (and the keys it was found by).
    async fn put_assets(&self, tenant_id: &str, assets: &[InventoryAsset]) -> Result<(), StoreError>;
    /// The tenant's assets any of whose lookup keys
    /// ([`InventoryAsset::lookup_keys`]) equals one of `keys` compared
    /// lower-case; ordered by name.
    async fn find_assets(&self, tenant_id: &str, keys: &[String]) -> Result<Vec<InventoryAsset>, StoreError>;
}

/// The shared state of each tenant's ServiceDesk Plus rate limit, so the
/// limit holds across every process that calls the tenant's SDP (see
/// [`crate::servicedesk::guard`]): one value per tenant, the theoretical
/// arrival time (epoch ms) of the tenant's next SDP call, moved by
/// compare-and-set.
#[async_trait]
pub trait SdpRateStore: Send + Sync {
    /// The tenant's current value, `None` when it has none yet.
    async fn sdp_rate_tat(&self, tenant_id: &str) -> Result<Option<i64>, StoreError>;
    /// Sets the tenant's value to `new` if it still is `expected`;
    /// `Ok(false)` when another process moved it first (nothing written).
    async fn swap_sdp_rate_tat(&self, tenant_id: &str, expected: Option<i64>, new: i64) -> Result<bool, StoreError>;
}

/// Everything Ticketflow keeps outside Kafka.
#[async_trait]
pub trait Store: TenantStore + HistoryStore + FeedbackStore + IdempotencyStore + SearchStore + SdpRateStore {
    /// Cheap reachability check for `/health/ready`.
    async fn ping(&self) -> Result<(), StoreError>;
}
