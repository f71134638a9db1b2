//! The stores behind traits: tenants, enhancement history, technician
//! feedback, and the idempotency records that make delivery exactly-once in
//! effect. Every method names one tenant (the partition key in ScyllaDB);
//! nothing reads across tenants except the tenant list itself.
//!
//! [`EmbeddedStore`] (libSQL under the data dir, shared with the broker's
//! own libSQL build) is the default; it can be opened by several processes
//! at once (WAL, busy timeout), so `ticketflow tenants` works while `run` is
//! up.

mod cache;
mod embedded;
mod ledger;

use std::collections::HashMap;

use async_trait::async_trait;
use schemas::ContextCounts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::servicedesk::{SdpAuth, SdpTenant};
use crate::{RetryHint, Secret};

pub use cache::TenantCache;
pub use embedded::EmbeddedStore;

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
}

impl StoreError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            StoreError::Unavailable(_) => RetryHint::Retryable { after: None },
            _ => RetryHint::Permanent,
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
            },
            webhook_secrets: WebhookSecrets {
                current: Secret::new(webhook_secret),
                previous: None,
                previous_valid_until_ms: 0,
            },
            api_token_hash: hash_token(api_token),
            requests_per_minute: 600,
            enabled_events: vec!["request_created".to_string()],
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
    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    async fn get_tenant(&self, tenant_id: &str) -> Result<Option<Tenant>, StoreError>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    async fn remove_tenant(&self, tenant_id: &str) -> Result<bool, StoreError>;
    async fn tenant_by_api_token_hash(&self, hash: &str) -> Result<Option<Tenant>, StoreError>;
}

#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Writes the row for `(tenant_id, job_id)`, replacing an earlier one.
    async fn put_history(&self, row: &HistoryRow) -> Result<(), StoreError>;
    async fn history_by_job(&self, tenant_id: &str, job_id: &str) -> Result<Option<HistoryRow>, StoreError>;
    async fn history_by_ticket(&self, tenant_id: &str, ticket_id: &str) -> Result<Vec<HistoryRow>, StoreError>;
    /// The tenant's most recent rows, newest first.
    async fn recent_history(&self, tenant_id: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError>;
}

#[async_trait]
pub trait FeedbackStore: Send + Sync {
    async fn add_feedback(&self, feedback: &Feedback) -> Result<(), StoreError>;
    async fn list_feedback(&self, tenant_id: &str, from_ms: i64, until_ms: i64) -> Result<Vec<Feedback>, StoreError>;
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

/// Everything Ticketflow keeps outside Kafka.
#[async_trait]
pub trait Store: TenantStore + HistoryStore + FeedbackStore + IdempotencyStore {
    /// Cheap reachability check for `/health/ready`.
    async fn ping(&self) -> Result<(), StoreError>;
}
