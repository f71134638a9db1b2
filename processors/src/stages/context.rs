//! context: gathers what a technician would want next to the ticket, each
//! source with its own timeout inside an overall budget. Partial context is
//! fine; each source's outcome and timing travels on.
//!
//! Sources: the request itself from SDP; similar past tickets of the same
//! tenant (BM25 over the tenant's ticket index, which the record stage
//! keeps); knowledge-base articles (SDP solutions plus the tenant's imported
//! articles, merged); and the IP addresses and host names in the ticket
//! looked up in SDP's assets and the tenant's imported inventory. See
//! [`search`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use schemas::{
    ContextCounts, GatheredContext, IpReference, KbArticle, SimilarTicket, SourceOutcome, TicketFields, ValidatedJob,
};
use sinks::servicedesk::{SdpError, SdpRequest};
use sinks::store::Tenant;
use tracing::warn;

use super::text::{hostnames, ip_addresses, keywords};
use super::{decode, elapsed_ms, encode, sdp_outcome, sdp_permit, skip, suspension, tenant, Services};
use super::{is_deleted, TICKET_DELETED};
use crate::runtime::{Stage, StageFailure, StageInput, StageOutput};

pub mod search;

/// Similar tickets and articles a note shows.
const SIMILAR_LIMIT: usize = 3;
const KB_LIMIT: usize = 3;

pub struct ContextStage {
    services: Arc<Services>,
}

impl ContextStage {
    pub fn new(services: Arc<Services>) -> Self {
        ContextStage { services }
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
    search::ticket_text(f.subject.as_deref(), f.description.as_deref())
}

impl ContextStage {
    /// One SDP call, its outcome reported to the tenant's breaker and limiter.
    async fn sdp<T>(&self, tenant_id: &str, f: impl Future<Output = Result<T, SdpError>>) -> Result<T, SdpError> {
        let r = f.await;
        sdp_outcome(&self.services, tenant_id, &r);
        r
    }

    /// The context of a job, or (`Err`) why the job ends here: SDP's copy
    /// of the ticket says it was deleted or is closed ([`sdp_verdict`]).
    async fn gather(&self, job: ValidatedJob, tenant: &Tenant) -> Result<GatheredContext, String> {
        let s = &self.services;
        let t = s.settings.context_source_timeout;
        let meta = job.meta;
        let mut sources = Vec::new();
        let mut fields = job.request;

        // The webhook may carry only the id: then the SDP copy of the request
        // is needed before text-based sources can run.
        let has_text = fields.subject.is_some() || fields.description.is_some();
        // The request is always fetched: its status (and whether it still
        // exists) must come from SDP, not from the webhook.
        let verdict: std::sync::Mutex<Option<String>> = Default::default();
        let fetch = || {
            source("servicedesk", t, |_: &SdpRequest| 1, async {
                let r = self
                    .sdp(&tenant.tenant_id, s.sdp.get_request(&tenant.sdp, &meta.ticket_id))
                    .await;
                *verdict.lock().unwrap_or_else(|e| e.into_inner()) = sdp_verdict(&r);
                r
            })
        };
        let verdict_now = || verdict.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut sdp = None;
        if !has_text {
            let (r, o) = fetch().await;
            if let Some(reason) = verdict_now() {
                return Err(reason);
            }
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
        let store = s.tenants.store().as_ref();
        let similar_fut = source(
            "similar_tickets",
            t,
            Vec::len,
            crate::trace::store_call(
                "search_tickets",
                search::similar_tickets(store, &meta.tenant_id, &meta.ticket_id, &text, SIMILAR_LIMIT),
            ),
        );
        // SDP's solutions and the tenant's imported articles: either may
        // fail alone (logged) and the other still counts.
        let kb_fut = source("knowledge_base", t, Vec::len, async {
            let (from_sdp, imported) = tokio::join!(
                self.sdp(&tenant.tenant_id, s.sdp.search_solutions(&tenant.sdp, &kws, KB_LIMIT)),
                crate::trace::store_call(
                    "search_articles",
                    search::imported_articles(store, &meta.tenant_id, &text, KB_LIMIT)
                ),
            );
            match (from_sdp, imported) {
                (Err(a), Err(b)) => Err(format!("servicedesk: {a}; imported articles: {b}")),
                (from_sdp, imported) => {
                    if let Err(e) = &from_sdp {
                        warn!(error = %e, "SDP solutions search failed; imported articles only");
                    }
                    if let Err(e) = &imported {
                        warn!(error = %e, "imported article search failed; SDP solutions only");
                    }
                    Ok(search::merge_articles(
                        &text,
                        from_sdp.unwrap_or_default(),
                        imported.unwrap_or_default(),
                        KB_LIMIT,
                    ))
                }
            }
        });
        // SDP's assets by IP and the imported inventory by IP and host name.
        let ip_fut = source(
            "ip_inventory",
            t,
            |r: &(Vec<IpReference>, Vec<String>)| r.0.len(),
            async {
                let (from_sdp, inventory) = tokio::join!(
                    self.sdp(&tenant.tenant_id, s.sdp.assets_by_ip(&tenant.sdp, &ips)),
                    crate::trace::store_call(
                        "find_assets",
                        search::inventory_lookup(store, &meta.tenant_id, &text, &ips)
                    ),
                );
                match (from_sdp, inventory) {
                    (Err(a), Err(b)) => Err(format!("servicedesk: {a}; inventory: {b}")),
                    (from_sdp, inventory) => {
                        if let Err(e) = &from_sdp {
                            warn!(error = %e, "SDP asset search failed; inventory only");
                        }
                        let (assets, hosts) = inventory.unwrap_or_else(|e| {
                            warn!(error = %e, "inventory lookup failed; SDP assets only");
                            (Vec::new(), hostnames(&text))
                        });
                        Ok((search::merge_assets(from_sdp.unwrap_or_default(), assets), hosts))
                    }
                }
            },
        );
        let (sdp_late, (similar, o1), (kb, o2), (ip_refs, o3)) = tokio::join!(sdp_fut, similar_fut, kb_fut, ip_fut);
        if let Some(reason) = verdict_now() {
            return Err(reason);
        }
        if let Some((r, o)) = sdp_late {
            sources.push(o);
            if let Some(r) = r {
                fields = merge(&fields, &r.fields);
            }
        }
        sources.extend([o1, o2, o3]);
        let similar: Vec<SimilarTicket> = similar.unwrap_or_default();
        let kb: Vec<KbArticle> = kb.unwrap_or_default();
        let (ip_refs, hosts): (Vec<IpReference>, Vec<String>) =
            ip_refs.unwrap_or_else(|| (Vec::new(), hostnames(&text)));
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
            // The names the old system's history used.
            let old_name = match o.source.as_str() {
                "similar_tickets" => "ticket_search_time_ms",
                "knowledge_base" => "kb_search_time_ms",
                "ip_inventory" => "ip_lookup_time_ms",
                _ => continue,
            };
            timings.insert(old_name.to_string(), o.duration_ms);
        }
        Ok(GatheredContext {
            meta,
            request: fields,
            similar_tickets: similar,
            kb_articles: kb,
            ips_found: ips,
            hostnames_found: hosts,
            ip_references: ip_refs,
            sources,
            counts,
            timings,
        })
    }
}

/// Why SDP's answer for the ticket ends the job: the ticket was deleted
/// (404), or its status there is closed or resolved. `None`: go on (other
/// failures leave the context partial).
fn sdp_verdict(r: &Result<SdpRequest, SdpError>) -> Option<String> {
    match r {
        Err(e) if is_deleted(e) => Some(TICKET_DELETED.to_string()),
        Ok(req) => req
            .closed_status()
            .map(|status| format!("ticket closed in ServiceDesk Plus (status: {status})")),
        Err(_) => None,
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
            Ok(Ok(g)) => g,
            Ok(Err(reason)) => {
                return skip(&self.services, &fallback.meta, fallback.request.subject, reason).await;
            }
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
                    hostnames_found: vec![],
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
