//! update: posts the enhancement as a note on the SDP request, at most once
//! per job across retries, restarts and rebalances.
//!
//! Before posting, the job is marked `pending` in the idempotency store;
//! after, `posted` with the note id. A redo that finds `posted` does not
//! post; one that finds `pending` (a crash between post and record) looks
//! for the job's marker among the ticket's notes (every page of them)
//! before posting again.
//!
//! A ticket deleted in SDP (404 on the post or the note search) ends the job
//! `skipped` with "ticket deleted": expected, not a failure, no DLQ.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use schemas::{SynthesizedEnhancement, TicketUpdated};
use sinks::servicedesk::{SdpError, SdpNote, NOTES_PAGE_SIZE};
use sinks::store::{NoteState, Tenant};
use tracing::info;

use super::{
    decode, elapsed_ms, encode, is_deleted, sdp_outcome, sdp_permit, skip, store_failure, suspension, tenant, Services,
    TICKET_DELETED,
};
use crate::runtime::{Stage, StageFailure, StageInput, StageOutput};
use crate::trace::store_call;

pub struct UpdateStage {
    services: Arc<Services>,
}

impl UpdateStage {
    pub fn new(services: Arc<Services>) -> Self {
        UpdateStage { services }
    }
}

/// The line that ties a note to its job; found again on redo.
pub fn job_marker(job_id: &str) -> String {
    format!("Ticketflow job {job_id}")
}

impl UpdateStage {
    fn sdp_failure(e: SdpError) -> StageFailure {
        StageFailure {
            error: e.to_string(),
            hint: e.retry_hint(),
        }
    }

    /// The skip reason when the tenant is suspended and the job's note is
    /// not known to be on the ticket. A posted note (a redo) is recorded as
    /// usual; a `pending` one is not looked for (that is an SDP call), so the
    /// job ends `skipped` although an earlier attempt may have posted it.
    async fn suspended(&self, e: &SynthesizedEnhancement) -> Result<Option<String>, StageFailure> {
        let m = &e.meta;
        let Some(reason) = suspension(&*tenant(&self.services, &m.tenant_id).await?) else {
            return Ok(None);
        };
        let store = self.services.tenants.store();
        match store_call("note_state", store.note_state(&m.tenant_id, &m.job_id))
            .await
            .map_err(store_failure)?
        {
            Some(NoteState::Posted { .. }) => Ok(None),
            Some(NoteState::Pending) => Ok(Some(format!("{reason} (an earlier attempt may have posted the note)"))),
            None => Ok(Some(reason)),
        }
    }

    /// Looks for the job's marker among every note of the ticket, page by
    /// page in SDP's order, stopping at the page that has it. The first page
    /// was reserved with the post; each further page is one more SDP call
    /// under the tenant's rate limit (a deferral restarts the search).
    async fn find_marker(
        &self,
        tenant: &Tenant,
        ticket_id: &str,
        marker: &str,
    ) -> Result<Result<Option<SdpNote>, SdpError>, StageFailure> {
        let mut start = 1u32;
        loop {
            if start > 1 {
                sdp_permit(&self.services, tenant, 1).await?;
            }
            let page = self
                .services
                .sdp
                .list_notes_page(&tenant.sdp, ticket_id, start, NOTES_PAGE_SIZE)
                .await;
            sdp_outcome(&self.services, &tenant.tenant_id, &page);
            let page = match page {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(found) = page.notes.iter().find(|n| n.description.contains(marker)) {
                return Ok(Ok(Some(found.clone())));
            }
            if !page.has_more_rows {
                return Ok(Ok(None));
            }
            start = start.saturating_add(page.notes.len() as u32);
        }
    }

    /// Posts the note unless the job already did; returns (note id, already
    /// posted), or `None` when SDP says the ticket was deleted.
    /// `resent`: the record is a manual re-send (replay, DLQ retry), whose
    /// time since the original webhook is not the pipeline's latency.
    async fn post_once(
        &self,
        e: &SynthesizedEnhancement,
        resent: bool,
    ) -> Result<Option<(String, bool)>, StageFailure> {
        let m = &e.meta;
        let store = self.services.tenants.store();
        let tenant = tenant(&self.services, &m.tenant_id).await?;
        let state = store_call("note_state", store.note_state(&m.tenant_id, &m.job_id))
            .await
            .map_err(store_failure)?;
        if let Some(NoteState::Posted { note_id }) = state {
            return Ok(Some((note_id, true)));
        }
        let pending = state == Some(NoteState::Pending);
        sdp_permit(&self.services, &tenant, if pending { 2 } else { 1 }).await?;
        let marker = job_marker(&m.job_id);
        if pending {
            let found = match self.find_marker(&tenant, &m.ticket_id, &marker).await? {
                Err(e) if is_deleted(&e) => return Ok(None),
                found => found.map_err(Self::sdp_failure)?,
            };
            if let Some(found) = found {
                info!(note_id = %found.id, "note already on the ticket from an earlier attempt");
                store_call(
                    "note_posted",
                    store.note_posted(&m.tenant_id, &m.job_id, &m.ticket_id, &found.id),
                )
                .await
                .map_err(store_failure)?;
                return Ok(Some((found.id.clone(), true)));
            }
        } else {
            store_call(
                "note_pending",
                store.note_pending(&m.tenant_id, &m.job_id, &m.ticket_id),
            )
            .await
            .map_err(store_failure)?;
        }
        let description = format!("{}<br><br><small>{marker}</small>", e.note_text);
        let note_id = self
            .services
            .sdp
            .add_note(&tenant.sdp, &m.ticket_id, &description)
            .await;
        sdp_outcome(&self.services, &m.tenant_id, &note_id);
        let note_id = match note_id {
            Err(e) if is_deleted(&e) => return Ok(None),
            r => r.map_err(Self::sdp_failure)?,
        };
        store_call(
            "note_posted",
            store.note_posted(&m.tenant_id, &m.job_id, &m.ticket_id, &note_id),
        )
        .await
        .map_err(store_failure)?;
        // Webhook received by ingest → note on the ticket (the old system's
        // "processing time"; its promise was p95 under 60 s). A manual
        // re-send is not counted: hours in a DLQ would read as latency.
        let e2e_s = (sinks::now_ms() - m.received_at_ms).max(0) as f64 / 1000.0;
        if !resent {
            sinks::metrics::metrics()
                .end_to_end_duration
                .with_label_values(&[] as &[&str])
                .observe(e2e_s);
        }
        info!(note_id = %note_id, method = %e.method, end_to_end_s = e2e_s, "note posted");
        Ok(Some((note_id, false)))
    }
}

#[async_trait]
impl Stage for UpdateStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let started = Instant::now();
        let e: SynthesizedEnhancement = decode(input.value)?;
        if let Some(reason) = self.suspended(&e).await? {
            return skip(&self.services, &e.meta, e.request.subject, reason).await;
        }
        let Some((note_id, already_posted)) = self.post_once(&e, input.headers.replayed_from.is_some()).await? else {
            return skip(&self.services, &e.meta, e.request.subject, TICKET_DELETED.to_string()).await;
        };
        let mut timings = e.timings;
        timings.insert("update".to_string(), elapsed_ms(started));
        Ok(StageOutput::Forward(encode(&TicketUpdated {
            meta: e.meta,
            request: e.request,
            note_text: e.note_text,
            note_id: Some(note_id).filter(|n| !n.is_empty()),
            already_posted,
            method: e.method,
            fallback_reason: e.fallback_reason,
            model: e.model,
            prompt_version: e.prompt_version,
            tokens_in: e.tokens_in,
            tokens_out: e.tokens_out,
            cost_usd: e.cost_usd,
            counts: e.counts,
            timings,
        })?))
    }
}
