use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::codec::Record;

/// Every schema file, by file name. New writer versions go here too.
pub(crate) const SCHEMA_FILES: &[(&str, &str)] = &[
    ("webhook_received.avsc", WebhookReceived::SCHEMA),
    ("validated_job.avsc", ValidatedJob::SCHEMA),
    ("gathered_context.avsc", GatheredContext::SCHEMA),
    ("synthesized_enhancement.avsc", SynthesizedEnhancement::SCHEMA),
    ("ticket_updated.avsc", TicketUpdated::SCHEMA),
    ("failure_envelope.avsc", FailureEnvelope::SCHEMA),
];

macro_rules! record {
    ($ty:ident, $name:literal, $file:literal) => {
        impl Record for $ty {
            const NAME: &'static str = concat!("io.ticketflow.", $name);
            const SCHEMA: &'static str = include_str!(concat!("../avro/", $file));
        }
    };
}

record!(WebhookReceived, "WebhookReceived", "webhook_received.avsc");
record!(ValidatedJob, "ValidatedJob", "validated_job.avsc");
record!(GatheredContext, "GatheredContext", "gathered_context.avsc");
record!(
    SynthesizedEnhancement,
    "SynthesizedEnhancement",
    "synthesized_enhancement.avsc"
);
record!(TicketUpdated, "TicketUpdated", "ticket_updated.avsc");
record!(FailureEnvelope, "FailureEnvelope", "failure_envelope.avsc");

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KbArticle {
    pub id: String,
    pub title: String,
    pub url: Option<String>,
    pub snippet: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpReference {
    pub ip: String,
    pub asset_name: String,
    pub asset_type: Option<String>,
    pub owner: Option<String>,
    pub site: Option<String>,
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
