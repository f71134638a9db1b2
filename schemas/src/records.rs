use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::codec::Record;

/// Every released schema of one record type: `avro/<dir>/v1.avsc`,
/// `v2.avsc`, ... . A writer schema, once released, stays here unchanged for
/// as long as records written with it may still be read (topics, retry tiers,
/// dead-letter payloads); the newest version is the reader schema the Rust
/// type maps to.
#[derive(Debug, Clone, Copy)]
pub struct RecordSchemas {
    /// Full Avro name, as [`Record::NAME`].
    pub name: &'static str,
    /// Folder under `schemas/avro/`.
    pub dir: &'static str,
    /// Schema texts, oldest first: `versions[i]` is `v{i+1}.avsc`.
    pub versions: &'static [&'static str],
}

impl RecordSchemas {
    /// The newest version, the reader schema.
    pub fn current(&self) -> &'static str {
        self.versions[self.versions.len() - 1]
    }

    /// Every version, numbered from 1, with its text.
    pub fn numbered(&self) -> impl Iterator<Item = (usize, &'static str)> {
        self.versions.iter().enumerate().map(|(i, text)| (i + 1, *text))
    }
}

/// Declares the record types: for each, its folder and every released
/// version, oldest first. A new version is one more number here and one more
/// file; `tests/evolution.rs` fails on a file that is not listed, a listed
/// version that is not backward compatible with the newest, and a released
/// schema that was changed or removed.
macro_rules! records {
    ($($ty:ident => $dir:literal [$($v:literal),+ $(,)?]),+ $(,)?) => {
        $(
            impl Record for $ty {
                const NAME: &'static str = concat!("io.ticketflow.", stringify!($ty));
                const VERSIONS: &'static [&'static str] =
                    &[$(include_str!(concat!("../avro/", $dir, "/v", $v, ".avsc"))),+];
            }
        )+

        /// Every record type with every released schema, registered by
        /// [`Codec::builtin`](crate::Codec::builtin).
        pub const SCHEMA_FILES: &[RecordSchemas] = &[$(RecordSchemas {
            name: <$ty as Record>::NAME,
            dir: $dir,
            versions: <$ty as Record>::VERSIONS,
        }),+];
    };
}

records! {
    // v2: optional `webhook_timestamp` (default null).
    WebhookReceived => "webhook_received" [1, 2],
    ValidatedJob => "validated_job" [1],
    // v2: similar tickets' `resolution`, articles' and assets' `source`,
    // assets' `hostname`, `hostnames_found`.
    GatheredContext => "gathered_context" [1, 2],
    // v2: `prompt_version`, `tokens_in`, `tokens_out`, `cost_usd`.
    SynthesizedEnhancement => "synthesized_enhancement" [1, 2],
    // v2: as synthesized_enhancement v2.
    TicketUpdated => "ticket_updated" [1, 2],
    FailureEnvelope => "failure_envelope" [1],
}

/// Identity of one enhancement job, carried unchanged through every stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobMeta {
    pub job_id: String,
    pub correlation_id: String,
    pub tenant_id: String,
    pub ticket_id: String,
    pub event: String,
    pub webhook_id: String,
    pub received_at_ms: i64,
}

impl JobMeta {
    /// The Kafka record key: one ticket's events share a partition.
    pub fn key(&self) -> String {
        format!("{}:{}", self.tenant_id, self.ticket_id)
    }
}

/// Ticket fields as known at a point of the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TicketFields {
    pub subject: Option<String>,
    pub description: Option<String>,
    pub requester_name: Option<String>,
    pub requester_email: Option<String>,
    pub priority: Option<String>,
    pub category: Option<String>,
    pub site: Option<String>,
    pub created_time: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContextCounts {
    pub similar_tickets: i32,
    pub kb_articles: i32,
    pub ip_references: i32,
    pub nodes_success: i32,
    pub nodes_failed: i32,
}

/// Value of `<prefix>.webhooks`.
///
/// Schema v2 added `webhook_timestamp` (`["null", "long"]`, default null),
/// which this type does not carry yet: encoding writes the default, decoding
/// drops the field. Whoever fills it adds
/// `#[serde(default)] pub webhook_timestamp: Option<i64>` here and sets it
/// where the struct is built (ingest); the schema needs no new version for
/// that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookReceived {
    pub meta: JobMeta,
    pub payload_json: String,
}

/// Value of `<prefix>.validated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedJob {
    pub meta: JobMeta,
    pub request: TicketFields,
    pub validated_at_ms: i64,
    pub timings: HashMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarTicket {
    pub ticket_id: String,
    pub subject: Option<String>,
    pub summary: Option<String>,
    pub status: String,
    pub similarity: f64,
    /// How it was resolved (v2; `None` from v1 writers).
    #[serde(default)]
    pub resolution: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KbArticle {
    pub id: String,
    pub title: String,
    pub url: Option<String>,
    pub snippet: Option<String>,
    /// `sdp` or `imported` (v2; `sdp` from v1 writers).
    #[serde(default = "source_sdp")]
    pub source: String,
}

fn source_sdp() -> String {
    "sdp".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpReference {
    pub ip: String,
    pub asset_name: String,
    pub asset_type: Option<String>,
    pub owner: Option<String>,
    pub site: Option<String>,
    /// The asset's host name when known (v2).
    #[serde(default)]
    pub hostname: Option<String>,
    /// `sdp` or `inventory` (v2; `sdp` from v1 writers).
    #[serde(default = "source_sdp")]
    pub source: String,
}

/// How one context source fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOutcome {
    pub source: String,
    pub ok: bool,
    pub duration_ms: i64,
    pub items: i32,
    pub error: Option<String>,
}

/// Value of `<prefix>.context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatheredContext {
    pub meta: JobMeta,
    pub request: TicketFields,
    pub similar_tickets: Vec<SimilarTicket>,
    pub kb_articles: Vec<KbArticle>,
    pub ips_found: Vec<String>,
    /// Host names mentioned in the ticket (v2).
    #[serde(default)]
    pub hostnames_found: Vec<String>,
    pub ip_references: Vec<IpReference>,
    pub sources: Vec<SourceOutcome>,
    pub counts: ContextCounts,
    pub timings: HashMap<String, i64>,
}

/// Value of `<prefix>.synthesized`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthesizedEnhancement {
    pub meta: JobMeta,
    pub request: TicketFields,
    pub note_text: String,
    /// `llm` or `fallback`.
    pub method: String,
    pub fallback_reason: Option<String>,
    pub model: Option<String>,
    /// Prompt template version of the LLM call (v2; `None` from v1 writers
    /// and for notes made without a call).
    #[serde(default)]
    pub prompt_version: Option<String>,
    /// Prompt and completion tokens and cost as the provider reported them
    /// (v2).
    #[serde(default)]
    pub tokens_in: Option<i64>,
    #[serde(default)]
    pub tokens_out: Option<i64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    pub counts: ContextCounts,
    pub timings: HashMap<String, i64>,
}

/// Value of `<prefix>.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketUpdated {
    pub meta: JobMeta,
    pub request: TicketFields,
    pub note_text: String,
    pub note_id: Option<String>,
    pub already_posted: bool,
    pub method: String,
    pub fallback_reason: Option<String>,
    pub model: Option<String>,
    /// Prompt template version of the LLM call (v2; `None` from v1 writers
    /// and for notes made without a call).
    #[serde(default)]
    pub prompt_version: Option<String>,
    /// Prompt and completion tokens and cost as the provider reported them
    /// (v2).
    #[serde(default)]
    pub tokens_in: Option<i64>,
    #[serde(default)]
    pub tokens_out: Option<i64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    pub counts: ContextCounts,
    pub timings: HashMap<String, i64>,
}

/// Value of retry-tier and dead-letter topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureEnvelope {
    pub job_id: String,
    pub correlation_id: String,
    pub tenant_id: String,
    pub ticket_id: String,
    pub failed_stage: String,
    pub error: String,
    /// `retryable` or `permanent`.
    pub error_class: String,
    pub attempt: i32,
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    pub failed_at_ms: i64,
    pub not_before_ms: i64,
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub payload: Vec<u8>,
}
