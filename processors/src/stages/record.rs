//! record: writes every outcome to `enhancement_history` — `success` or
//! `fallback` from `<prefix>.updated`, `failed` from every stage's
//! dead-letter topic, with the error and the stage that failed. A finished
//! ticket (`success`, `fallback`) also goes into the tenant's search index,
//! where the context stage finds it as a similar ticket.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use schemas::{
    Codec, FailureEnvelope, GatheredContext, Record, SynthesizedEnhancement, TicketFields, TicketUpdated, ValidatedJob,
    WebhookReceived,
};
use sinks::now_ms;
use sinks::store::{ContextCountsRow, DocKind, HistoryRow, HistoryStatus, LlmUsageRow};
use tracing::info;

use super::context::search::ticket_document;
use super::{decode, Services};
use crate::runtime::{Stage, StageFailure, StageInput, StageOutput};

pub struct RecordStage {
    services: Arc<Services>,
}

impl RecordStage {
    pub fn new(services: Arc<Services>) -> Self {
        RecordStage { services }
    }
}

fn success_row(u: TicketUpdated) -> HistoryRow {
    let status = if u.method == "llm" {
        HistoryStatus::Success
    } else {
        HistoryStatus::Fallback
    };
    let mut timings = u.timings;
    let now = now_ms();
    timings.insert("total".to_string(), now - u.meta.received_at_ms);
    HistoryRow {
        tenant_id: u.meta.tenant_id,
        job_id: u.meta.job_id,
        ticket_id: u.meta.ticket_id,
        correlation_id: u.meta.correlation_id,
        status,
        method: Some(u.method),
        error_message: u.fallback_reason,
        failed_stage: None,
        subject: u.request.subject,
        description: u.request.description.map(|d| d.chars().take(2000).collect()),
        note_text: Some(u.note_text),
        note_id: u.note_id,
        counts: ContextCountsRow::from(&u.counts),
        timings,
        received_at_ms: u.meta.received_at_ms,
        completed_at_ms: now,
        llm: LlmUsageRow {
            prompt_version: u.prompt_version,
            model: u.model,
            tokens_in: u.tokens_in,
            tokens_out: u.tokens_out,
            cost_usd: u.cost_usd,
        },
    }
}

/// What can still be read of a failed job's input.
fn failed_details(payload: &[u8]) -> (Option<TicketFields>, i64) {
    let codec = Codec::builtin();
    let Ok(name) = codec.record_name(payload) else {
        return (None, 0);
    };
    macro_rules! try_as {
        ($t:ty, $f:expr) => {
            if name == <$t>::NAME {
                if let Ok(r) = codec.decode::<$t>(payload) {
                    let f: fn($t) -> (Option<TicketFields>, i64) = $f;
                    return f(r);
                }
            }
        };
    }
    try_as!(WebhookReceived, |r| (None, r.meta.received_at_ms));
    try_as!(ValidatedJob, |r| (Some(r.request), r.meta.received_at_ms));
    try_as!(GatheredContext, |r| (Some(r.request), r.meta.received_at_ms));
    try_as!(SynthesizedEnhancement, |r| (Some(r.request), r.meta.received_at_ms));
    try_as!(TicketUpdated, |r| (Some(r.request), r.meta.received_at_ms));
    (None, 0)
}

fn failed_row(f: FailureEnvelope) -> HistoryRow {
    let (fields, received) = failed_details(&f.payload);
    let fields = fields.unwrap_or_default();
    HistoryRow {
        tenant_id: f.tenant_id,
        job_id: f.job_id,
        ticket_id: f.ticket_id,
        correlation_id: f.correlation_id,
        status: HistoryStatus::Failed,
        method: None,
        error_message: Some(format!(
            "{} (stage {}, attempt {}, {})",
            f.error, f.failed_stage, f.attempt, f.error_class
        )),
        failed_stage: Some(f.failed_stage),
        subject: fields.subject,
        description: None,
        note_text: None,
        note_id: None,
        counts: ContextCountsRow::default(),
        timings: HashMap::new(),
        received_at_ms: if received > 0 { received } else { f.failed_at_ms },
        completed_at_ms: now_ms(),
        llm: LlmUsageRow::default(),
    }
}

#[async_trait]
impl Stage for RecordStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let name = Codec::builtin()
            .record_name(input.value)
            .map_err(|e| StageFailure::permanent(format!("poison record: {e}")))?;
        let row = if name == TicketUpdated::NAME {
            success_row(decode::<TicketUpdated>(input.value)?)
        } else if name == FailureEnvelope::NAME {
            failed_row(decode::<FailureEnvelope>(input.value)?)
        } else {
            return Err(StageFailure::permanent(format!(
                "record stage cannot handle {name} records"
            )));
        };
        if row.tenant_id.is_empty() || row.tenant_id == "unknown" {
            // A poison record with no tenant: nothing to attribute it to; it stays on its DLQ.
            info!(job_id = %row.job_id, "dead-lettered record without a tenant; not recorded in history");
            return Ok(StageOutput::Done);
        }
        if matches!(row.status, HistoryStatus::Success | HistoryStatus::Fallback) {
            // Indexed before the history row: a failure here retries the
            // whole record (both writes replace what they wrote before).
            let doc = ticket_document(
                &row.ticket_id,
                row.subject.as_deref(),
                row.description.as_deref(),
                row.note_text.as_deref(),
                row.status.as_str(),
            );
            crate::trace::store_call(
                "index_ticket",
                self.services
                    .tenants
                    .store()
                    .index_documents(&row.tenant_id, DocKind::Ticket, &[doc]),
            )
            .await
            .map_err(super::store_failure)?;
        }
        super::record_outcome(&self.services, &row).await?;
        info!(status = row.status.as_str(), "enhancement recorded");
        Ok(StageOutput::Done)
    }
}
