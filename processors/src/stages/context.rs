//! context: gathers what a technician would want next to the ticket, each
//! source with its own timeout inside an overall budget. Partial context is
//! fine; each source's outcome and timing travels on.
//!
//! Sources: the request itself from SDP, similar past tickets of the same
//! tenant (history store), knowledge-base articles (SDP solutions), and the
//! IP addresses in the ticket looked up in the tenant's assets.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use schemas::{
    ContextCounts, GatheredContext, IpReference, KbArticle, SimilarTicket, SourceOutcome, TicketFields, ValidatedJob,
};
use sinks::servicedesk::{SdpError, SdpRequest};
use sinks::store::{HistoryStatus, Tenant};
use tracing::warn;

use super::text::{ip_addresses, keywords, similarity, tokens};
use super::{decode, elapsed_ms, encode, sdp_outcome, sdp_permit, skip, suspension, tenant, Services};
use crate::runtime::{Stage, StageFailure, StageInput, StageOutput};

const SIMILAR_LIMIT: usize = 3;
const SIMILAR_MIN: f64 = 0.25;
const HISTORY_SCAN: u32 = 500;
const KB_LIMIT: usize = 3;
/// How long one read of a tenant's recent history serves the similar-ticket
/// search. Without it every job read and tokenised the tenant's last
/// [`HISTORY_SCAN`] rows: at a few hundred jobs/s that was most of the
/// store's time (and its lock), which bounded the whole pipeline.
const RECENT_TTL: Duration = Duration::from_secs(1);

/// A past ticket as the similar-ticket search compares it.
struct PastTicket {
    ticket_id: String,
    subject: Option<String>,
    summary: Option<String>,
    status: &'static str,
    tokens: std::collections::HashSet<String>,
}

/// One tenant's recent tickets, read at `read_at`.
struct Recent {
    read_at: Instant,
    tickets: Arc<Vec<PastTicket>>,
}

/// Recent history per tenant, each read at most once per [`RECENT_TTL`]:
/// the first job to find it stale reads it, the others wait for that read.
#[derive(Default)]
struct RecentHistory {
    tenants: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<Option<Recent>>>>>,
}

impl RecentHistory {
    async fn get(
        &self,
        tenant_id: &str,
        load: impl Future<Output = Result<Vec<PastTicket>, sinks::store::StoreError>>,
    ) -> Result<Arc<Vec<PastTicket>>, sinks::store::StoreError> {
        let slot = self
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant_id.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(recent) = slot.as_ref().filter(|r| r.read_at.elapsed() < RECENT_TTL) {
            return Ok(recent.tickets.clone());
        }
        let tickets = Arc::new(load.await?);
        *slot = Some(Recent {
            read_at: Instant::now(),
            tickets: tickets.clone(),
        });
        Ok(tickets)
    }
}

pub struct ContextStage {
    services: Arc<Services>,
    recent: RecentHistory,
}

impl ContextStage {
    pub fn new(services: Arc<Services>) -> Self {
        ContextStage {
            services,
            recent: RecentHistory::default(),
        }
    }
}

/// Runs one source under its timeout, recording outcome and duration.
async fn source<T, E: std::fmt::Display>(
    name: &str,
    timeout: Duration,
    count: fn(&T) -> usize,
    f: impl Future<Output = Result<T, E>>,
) -> (Option<T>, SourceOutcome) {
    let started = Instant::now();
    let (value, error) = match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => (Some(v), None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(_) => (None, Some(format!("timed out after {} ms", timeout.as_millis()))),
    };
    if let Some(e) = &error {
        warn!(source = name, error = %e, "context source failed");
    }
    let outcome = SourceOutcome {
        source: name.to_string(),
        ok: error.is_none(),
        duration_ms: elapsed_ms(started),
        items: value.as_ref().map(|v| count(v) as i32).unwrap_or(0),
        error,
    };
    (value, outcome)
}

fn merge(webhook: &TicketFields, sdp: &TicketFields) -> TicketFields {
    let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
    TicketFields {
        subject: pick(&sdp.subject, &webhook.subject),
        description: pick(&sdp.description, &webhook.description),
        requester_name: pick(&sdp.requester_name, &webhook.requester_name),
        requester_email: pick(&sdp.requester_email, &webhook.requester_email),
        priority: pick(&sdp.priority, &webhook.priority),
        category: pick(&sdp.category, &webhook.category),
        site: pick(&sdp.site, &webhook.site),
        created_time: pick(&sdp.created_time, &webhook.created_time),
        status: pick(&sdp.status, &webhook.status),
    }
}

fn text_of(f: &TicketFields) -> String {
    format!(
        "{} {}",
        f.subject.as_deref().unwrap_or(""),
        f.description.as_deref().unwrap_or("")
    )
}

impl ContextStage {
    async fn similar(
        &self,
        tenant_id: &str,
        ticket_id: &str,
        text: &str,
    ) -> Result<Vec<SimilarTicket>, sinks::store::StoreError> {
        let mine = tokens(text);
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.services.tenants.store();
        let load = async {
            let rows =
                crate::trace::store_call("recent_history", store.recent_history(tenant_id, HISTORY_SCAN)).await?;
            Ok(rows
                .into_iter()
                .filter(|r| matches!(r.status, HistoryStatus::Success | HistoryStatus::Fallback))
                .map(|r| PastTicket {
                    tokens: tokens(&format!(
                        "{} {}",
                        r.subject.as_deref().unwrap_or(""),
                        r.description.as_deref().unwrap_or("")
                    )),
                    ticket_id: r.ticket_id,
                    subject: r.subject,
                    summary: r.note_text.map(|n| n.chars().take(400).collect()),
                    status: r.status.as_str(),
                })
                .collect())
        };
        let past = self.recent.get(tenant_id, load).await?;
        let mut scored: Vec<SimilarTicket> = past
            .iter()
            .filter(|r| r.ticket_id != ticket_id)
            .filter_map(|r| {
                let s = similarity(&mine, &r.tokens);
                (s >= SIMILAR_MIN).then(|| SimilarTicket {
                    ticket_id: r.ticket_id.clone(),
                    subject: r.subject.clone(),
                    summary: r.summary.clone(),
                    status: r.status.to_string(),
                    similarity: (s * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        scored.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        scored.dedup_by(|a, b| a.ticket_id == b.ticket_id);
        scored.truncate(SIMILAR_LIMIT);
        Ok(scored)
    }

    /// One SDP call, its outcome reported to the tenant's breaker and limiter.
    async fn sdp<T>(&self, tenant_id: &str, f: impl Future<Output = Result<T, SdpError>>) -> Result<T, SdpError> {
        let r = f.await;
        sdp_outcome(&self.services, tenant_id, &r);
        r
    }

    async fn gather(&self, job: ValidatedJob, tenant: &Tenant) -> GatheredContext {
        let s = &self.services;
        let t = s.settings.context_source_timeout;
        let meta = job.meta;
        let mut sources = Vec::new();
        let mut fields = job.request;

        // The webhook may carry only the id: then the SDP copy of the request
        // is needed before text-based sources can run.
        let has_text = fields.subject.is_some() || fields.description.is_some();
        let fetch = || {
            source(
                "servicedesk",
                t,
                |_: &SdpRequest| 1,
                self.sdp(&tenant.tenant_id, s.sdp.get_request(&tenant.sdp, &meta.ticket_id)),
            )
        };
        let mut sdp = None;
        if !has_text {
            let (r, o) = fetch().await;
            sdp = Some(r);
            sources.push(o);
            if let Some(Some(r)) = &sdp {
                fields = merge(&fields, &r.fields);
            }
        }
        let text = text_of(&fields);
        let ips = ip_addresses(&text);
        let kws = keywords(fields.subject.as_deref().unwrap_or(&text), 3);
        let sdp_fut = async {
            if sdp.is_none() {
                Some(fetch().await)
            } else {
                None
            }
        };
        let similar_fut = source(
            "similar_tickets",
            t,
            Vec::len,
            self.similar(&meta.tenant_id, &meta.ticket_id, &text),
        );
        let kb_fut = source(
            "knowledge_base",
            t,
            Vec::len,
            self.sdp(&tenant.tenant_id, s.sdp.search_solutions(&tenant.sdp, &kws, KB_LIMIT)),
        );
        let ip_fut = source(
            "ip_inventory",
            t,
            Vec::len,
            self.sdp(&tenant.tenant_id, s.sdp.assets_by_ip(&tenant.sdp, &ips)),
        );
        let (sdp_late, (similar, o1), (kb, o2), (ip_refs, o3)) = tokio::join!(sdp_fut, similar_fut, kb_fut, ip_fut);
        if let Some((r, o)) = sdp_late {
            sources.push(o);
            if let Some(r) = r {
                fields = merge(&fields, &r.fields);
            }
        }
        sources.extend([o1, o2, o3]);
        let similar: Vec<SimilarTicket> = similar.unwrap_or_default();
        let kb: Vec<KbArticle> = kb.unwrap_or_default();
        let ip_refs: Vec<IpReference> = ip_refs.unwrap_or_default();
        let ok = sources.iter().filter(|o| o.ok).count() as i32;
        let counts = ContextCounts {
            similar_tickets: similar.len() as i32,
            kb_articles: kb.len() as i32,
            ip_references: ip_refs.len() as i32,
            nodes_success: ok,
            nodes_failed: sources.len() as i32 - ok,
        };
        let mut timings = job.timings;
        for o in &sources {
            timings.insert(format!("context.{}", o.source), o.duration_ms);
        }
        GatheredContext {
            meta,
            request: fields,
            similar_tickets: similar,
            kb_articles: kb,
            ips_found: ips,
            ip_references: ip_refs,
            sources,
            counts,
            timings,
        }
    }
}

#[async_trait]
impl Stage for ContextStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let started = Instant::now();
        let job: ValidatedJob = decode(input.value)?;
        let tenant = tenant(&self.services, &job.meta.tenant_id).await?;
        if let Some(reason) = suspension(&tenant) {
            return skip(&self.services, &job.meta, job.request.subject, reason).await;
        }
        // The request itself and the knowledge base, plus the asset
        // inventory when the ticket mentions IP addresses.
        let has_text = job.request.subject.is_some() || job.request.description.is_some();
        let calls = if !has_text || !ip_addresses(&text_of(&job.request)).is_empty() {
            3
        } else {
            2
        };
        sdp_permit(&self.services, &tenant, calls).await?;
        let budget = self.services.settings.context_timeout;
        let fallback = job.clone();
        let mut gathered = match tokio::time::timeout(budget, self.gather(job, &tenant)).await {
            Ok(g) => g,
            Err(_) => {
                // Budget spent: go on with what the webhook said.
                warn!(
                    budget_ms = budget.as_millis() as u64,
                    "context budget exhausted; continuing without context"
                );
                GatheredContext {
                    meta: fallback.meta,
                    request: fallback.request,
                    similar_tickets: vec![],
                    kb_articles: vec![],
                    ips_found: vec![],
                    ip_references: vec![],
                    sources: vec![],
                    counts: ContextCounts {
                        nodes_failed: 4,
                        ..Default::default()
                    },
                    timings: fallback.timings,
                }
            }
        };
        gathered.timings.insert("context".to_string(), elapsed_ms(started));
        Ok(StageOutput::Forward(encode(&gathered)?))
    }
}

#[cfg(test)]
mod recent_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn past(id: &str) -> PastTicket {
        PastTicket {
            ticket_id: id.into(),
            subject: None,
            summary: None,
            status: "success",
            tokens: Default::default(),
        }
    }

    /// Concurrent jobs of one tenant share one read; another tenant gets its
    /// own; a read older than the TTL is read again.
    #[tokio::test]
    async fn recent_history_is_read_once_per_tenant_per_ttl() {
        let recent = Arc::new(RecentHistory::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let get = |tenant: &'static str| {
            let (recent, reads) = (recent.clone(), reads.clone());
            async move {
                recent
                    .get(tenant, async move {
                        reads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(vec![past(tenant)])
                    })
                    .await
                    .unwrap()
            }
        };
        let all = futures::future::join_all((0..20).map(|_| get("a"))).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1, "20 concurrent jobs, one read");
        assert!(all.iter().all(|t| t[0].ticket_id == "a"));
        assert_eq!(get("b").await[0].ticket_id, "b", "tenant b never sees a's tickets");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        tokio::time::sleep(RECENT_TTL + Duration::from_millis(10)).await;
        get("a").await;
        assert_eq!(reads.load(Ordering::SeqCst), 3, "stale after the TTL");
    }
}
