//! synthesize: has the LLM write the technician's note from the gathered
//! context. On LLM failure, an open circuit, or `DISABLE_LLM_SYNTHESIS`, a
//! deterministic fallback formatting of the context is used instead, and the
//! record says which (`method`, `fallback_reason`). This stage never fails a
//! job because the LLM is down.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use schemas::{GatheredContext, SynthesizedEnhancement};
use sinks::llm::ChatMessage;
use tracing::{info, warn};

use super::text::html_escape;
use super::{decode, elapsed_ms, encode, skip, store_failure, suspension, Services};
use crate::runtime::{Stage, StageFailure, StageInput, StageOutput};

const SYSTEM_PROMPT: &str =
    "You are an experienced IT service desk engineer writing an internal note for the technician \
who will pick up this ticket. Be concise and concrete. Structure the note as: Summary (one or two sentences), \
Likely cause, Suggested steps (numbered, most likely fix first), and References (similar tickets, KB articles, \
affected assets by name). Use only the facts given; say so when context is missing. Never address the requester.";

pub struct SynthesizeStage {
    services: Arc<Services>,
}

impl SynthesizeStage {
    pub fn new(services: Arc<Services>) -> Self {
        SynthesizeStage { services }
    }
}

/// The user prompt: the ticket and its context, one fact per line.
pub fn build_prompt(c: &GatheredContext) -> String {
    let r = &c.request;
    let mut p = String::new();
    let line = |p: &mut String, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            p.push_str(&format!("{k}: {v}\n"));
        }
    };
    p.push_str(&format!("Ticket: #{}\n", c.meta.ticket_id));
    line(&mut p, "Subject", &r.subject);
    line(&mut p, "Priority", &r.priority);
    line(&mut p, "Category", &r.category);
    line(&mut p, "Site", &r.site);
    line(&mut p, "Requester", &r.requester_name);
    if let Some(d) = &r.description {
        p.push_str(&format!("Description:\n{}\n", d.chars().take(4000).collect::<String>()));
    }
    p.push_str("\nSimilar past tickets:\n");
    if c.similar_tickets.is_empty() {
        p.push_str("(none found)\n");
    }
    for s in &c.similar_tickets {
        p.push_str(&format!(
            "- Ticket #{} (similarity {:.2}): {} — earlier note: {}\n",
            s.ticket_id,
            s.similarity,
            s.subject.as_deref().unwrap_or("?"),
            s.summary.as_deref().unwrap_or("-").replace('\n', " ")
        ));
    }
    p.push_str("\nKnowledge-base articles:\n");
    if c.kb_articles.is_empty() {
        p.push_str("(none found)\n");
    }
    for k in &c.kb_articles {
        p.push_str(&format!(
            "- KB {}: {} — {}\n",
            k.id,
            k.title,
            k.snippet.as_deref().unwrap_or("")
        ));
    }
    p.push_str("\nIP addresses in the ticket and matching assets:\n");
    if c.ips_found.is_empty() {
        p.push_str("(no IP addresses mentioned)\n");
    }
    for ip in &c.ips_found {
        match c.ip_references.iter().find(|a| a.ip == *ip) {
            Some(a) => p.push_str(&format!(
                "- IP {ip}: asset {} ({}, owner {}, site {})\n",
                a.asset_name,
                a.asset_type.as_deref().unwrap_or("unknown type"),
                a.owner.as_deref().unwrap_or("unknown"),
                a.site.as_deref().unwrap_or("unknown")
            )),
            None => p.push_str(&format!("- IP {ip}: not in the asset inventory\n")),
        }
    }
    let failed: Vec<&str> = c.sources.iter().filter(|s| !s.ok).map(|s| s.source.as_str()).collect();
    if !failed.is_empty() {
        p.push_str(&format!("\nContext sources unavailable: {}\n", failed.join(", ")));
    }
    p
}

/// The note without the LLM: the same facts, formatted.
pub fn fallback_note(c: &GatheredContext, reason: &str) -> String {
    let mut n = String::from("<b>Ticketflow context</b> (automatic summary unavailable: ");
    n.push_str(&html_escape(reason));
    n.push_str(")<br>");
    if let Some(s) = &c.request.subject {
        n.push_str(&format!("<b>Subject:</b> {}<br>", html_escape(s)));
    }
    if let Some(p) = &c.request.priority {
        n.push_str(&format!("<b>Priority:</b> {}<br>", html_escape(p)));
    }
    n.push_str("<b>Similar past tickets:</b><ul>");
    if c.similar_tickets.is_empty() {
        n.push_str("<li>none found</li>");
    }
    for s in &c.similar_tickets {
        n.push_str(&format!(
            "<li>#{} ({:.0}% similar): {}</li>",
            html_escape(&s.ticket_id),
            s.similarity * 100.0,
            html_escape(s.subject.as_deref().unwrap_or("?"))
        ));
    }
    n.push_str("</ul><b>Knowledge-base articles:</b><ul>");
    if c.kb_articles.is_empty() {
        n.push_str("<li>none found</li>");
    }
    for k in &c.kb_articles {
        n.push_str(&format!(
            "<li>{} (KB {})</li>",
            html_escape(&k.title),
            html_escape(&k.id)
        ));
    }
    n.push_str("</ul><b>IP addresses:</b><ul>");
    if c.ips_found.is_empty() {
        n.push_str("<li>none mentioned</li>");
    }
    for ip in &c.ips_found {
        match c.ip_references.iter().find(|a| a.ip == *ip) {
            Some(a) => n.push_str(&format!(
                "<li>{} → {} ({})</li>",
                html_escape(ip),
                html_escape(&a.asset_name),
                html_escape(a.asset_type.as_deref().unwrap_or("asset"))
            )),
            None => n.push_str(&format!("<li>{} → not in inventory</li>", html_escape(ip))),
        }
    }
    n.push_str("</ul>");
    n
}

fn llm_note(text: &str) -> String {
    format!(
        "<b>Ticketflow summary</b><br>{}",
        html_escape(text).replace('\n', "<br>")
    )
}

#[async_trait]
impl Stage for SynthesizeStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let started = Instant::now();
        let c: GatheredContext = decode(input.value)?;
        let s = &self.services;
        // A tenant suspended since context was gathered: no LLM call. (A
        // removed tenant goes on; update fails it.)
        if let Some(reason) = s
            .tenants
            .get(&c.meta.tenant_id)
            .await
            .map_err(store_failure)?
            .and_then(|t| suspension(&t))
        {
            return skip(s, &c.meta, c.request.subject, reason).await;
        }
        let outcome: Result<(String, String), String> = if s.settings.disable_llm {
            Err("LLM synthesis disabled (DISABLE_LLM_SYNTHESIS=true)".to_string())
        } else if let Err(open) = s.llm_breaker.acquire() {
            Err(open.to_string())
        } else {
            let messages = [ChatMessage::system(SYSTEM_PROMPT), ChatMessage::user(build_prompt(&c))];
            match tokio::time::timeout(s.settings.llm_timeout, s.llm.complete(&messages, 600)).await {
                Ok(Ok(done)) => {
                    s.llm_breaker.record_success();
                    Ok((done.text, done.model))
                }
                Ok(Err(e)) => {
                    if e.retry_hint().is_retryable() {
                        s.llm_breaker.record_failure();
                    }
                    Err(e.to_string())
                }
                Err(_) => {
                    s.llm_breaker.record_failure();
                    Err(format!(
                        "LLM call timed out after {} ms",
                        s.settings.llm_timeout.as_millis()
                    ))
                }
            }
        };
        let (note_text, method, fallback_reason, model) = match outcome {
            Ok((text, model)) => (llm_note(&text), "llm", None, Some(model)),
            Err(reason) => {
                if s.settings.disable_llm {
                    info!(reason = %reason, "using fallback formatting");
                } else {
                    warn!(reason = %reason, "LLM synthesis failed; using fallback formatting");
                }
                (fallback_note(&c, &reason), "fallback", Some(reason), None)
            }
        };
        let mut timings = c.timings;
        timings.insert("synthesize".to_string(), elapsed_ms(started));
        Ok(StageOutput::Forward(encode(&SynthesizedEnhancement {
            meta: c.meta,
            request: c.request,
            note_text,
            method: method.to_string(),
            fallback_reason,
            model,
            counts: c.counts,
            timings,
        })?))
    }
}
