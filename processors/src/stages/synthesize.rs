//! synthesize: has the LLM write the technician's note from the gathered
//! context, rendered with the context's own sections (`note`), from a
//! versioned prompt cut to a token budget (`prompt`).
//!
//! LLM policy. A transient failure (timeout, 408, 429, 5xx, unreachable,
//! an unreadable answer, such an error inside HTTP 200) fails the attempt
//! as retryable, so the record goes through the stage's retry tiers; only
//! the last attempt falls back. A rejection (400/401/402/403/404: key,
//! credit, model, request) falls back at once, counted in
//! `ticketflow_llm_rejected_total` and logged at ERROR. An open circuit or
//! `DISABLE_LLM_SYNTHESIS` falls back at once. The fallback note carries the
//! same context and says why; the record says which was used (`method`,
//! `fallback_reason`) and, for a call, the prompt version, model, tokens
//! and cost. This stage never fails a job because the LLM is down.

mod note;
mod prompt;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use schemas::{GatheredContext, SynthesizedEnhancement};
use sinks::llm::{ChatMessage, Completion, CompletionRequest, LlmError};
use sinks::RetryHint;
use tracing::{error, info, warn};

pub use note::prose_of;
use note::{fallback_note, llm_note, parse_answer, Provenance};
use prompt::{build_prompt, Prompt};
pub use prompt::{DEFAULT_MAX_PROMPT_TOKENS, PROMPT_VERSION};

use super::{decode, elapsed_ms, encode, skip, store_failure, suspension, Services};
use crate::runtime::{Stage, StageFailure, StageInput, StageOutput};

/// Completion tokens asked for: the JSON answer runs to a few hundred.
const MAX_COMPLETION_TOKENS: u32 = 800;

pub struct SynthesizeStage {
    services: Arc<Services>,
    /// The last transient LLM error, quoted in the reason of notes that fall
    /// back while the circuit is open.
    last_error: Mutex<Option<String>>,
}

impl SynthesizeStage {
    pub fn new(services: Arc<Services>) -> Self {
        SynthesizeStage {
            services,
            last_error: Mutex::new(None),
        }
    }
}

/// How one attempt at an LLM note ended.
enum Outcome {
    Answered(Completion),
    /// Post the fallback note with this reason; `called` says whether the
    /// LLM was asked (not when disabled or the circuit is open).
    Fallback {
        reason: String,
        called: bool,
    },
    /// Give the record to the next retry tier.
    Retry(StageFailure),
}

impl SynthesizeStage {
    async fn ask(&self, prompt: &Prompt, attempt: u32) -> Outcome {
        let s = &self.services;
        if s.settings.disable_llm {
            return Outcome::Fallback {
                reason: "LLM synthesis disabled (DISABLE_LLM_SYNTHESIS=true)".to_string(),
                called: false,
            };
        }
        if let Err(open) = s.llm_breaker.acquire() {
            let last = self.last_error.lock().expect("last error lock").clone();
            return Outcome::Fallback {
                reason: match last {
                    Some(e) => format!("{open}; last LLM error: {e}"),
                    None => open.to_string(),
                },
                called: false,
            };
        }
        let messages = [
            ChatMessage::system(prompt.system.as_str()),
            ChatMessage::user(prompt.user.as_str()),
        ];
        let req = CompletionRequest {
            messages: &messages,
            max_tokens: MAX_COMPLETION_TOKENS,
            json_object: true,
        };
        // The client bounds each request; this bounds a model list tried
        // in turn, should a server trickle bytes forever.
        let bound = s.settings.llm_timeout * (s.llm.models().len() as u32 + 1) + Duration::from_secs(1);
        let result = match tokio::time::timeout(bound, s.llm.complete_with(&req)).await {
            Ok(r) => r,
            Err(_) => Err(LlmError::Timeout(bound)),
        };
        let e = match result {
            Ok(done) => {
                s.llm_breaker.record_success();
                return Outcome::Answered(done);
            }
            Err(e) => e,
        };
        let of = s.settings.max_attempts.max(1);
        match e.retry_hint() {
            RetryHint::Permanent => {
                // The provider answered: it is up, whatever it thought of
                // this request (a half-open probe must not stay pending).
                s.llm_breaker.record_success();
                match e.rejected_status() {
                    Some(status) => error!(
                        status,
                        error = %e,
                        "LLM rejected the request; fallback note without retry (check LLM_API_KEY, credit, LLM_MODELS)"
                    ),
                    None => warn!(error = %e, "LLM call failed permanently; fallback note"),
                }
                Outcome::Fallback {
                    reason: e.to_string(),
                    called: true,
                }
            }
            hint => {
                s.llm_breaker.record_failure();
                *self.last_error.lock().expect("last error lock") = Some(e.to_string());
                let after = match hint {
                    RetryHint::Retryable { after } => after,
                    RetryHint::Throttled { after } => Some(after),
                    RetryHint::Permanent => None,
                };
                if attempt < of {
                    warn!(attempt, of, error = %e, "LLM call failed; the record goes to the next retry tier");
                    Outcome::Retry(StageFailure::retryable(e.to_string(), after))
                } else {
                    Outcome::Fallback {
                        reason: format!("{e} (attempt {attempt} of {of}; no retry left)"),
                        called: true,
                    }
                }
            }
        }
    }
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
        let attempt = input.attempt.max(1) as u32;
        let mut timings = c.timings.clone();
        let phase = Instant::now();
        let prompt = build_prompt(&c, s.settings.llm_max_prompt_tokens);
        timings.insert("synthesize.prompt".to_string(), elapsed_ms(phase));
        if let Some(cut) = &prompt.cut {
            info!(cut = %cut, estimated_tokens = prompt.estimated_tokens(), "prompt cut to its token budget");
        }
        let phase = Instant::now();
        let outcome = self.ask(&prompt, attempt).await;
        if matches!(outcome, Outcome::Answered(_) | Outcome::Fallback { called: true, .. }) {
            timings.insert("synthesize.llm".to_string(), elapsed_ms(phase));
        }
        let phase = Instant::now();
        let enhancement = match outcome {
            Outcome::Retry(failure) => return Err(failure),
            Outcome::Answered(done) => {
                let answer = parse_answer(&done.text);
                if !answer.structured {
                    info!(model = %done.model, "LLM answered prose, not the JSON asked for; shown as the summary");
                }
                let how = Provenance {
                    model: &done.model,
                    prompt_version: PROMPT_VERSION,
                    attempt,
                    cut: prompt.cut.as_deref(),
                };
                SynthesizedEnhancement {
                    note_text: llm_note(&c, &answer, &how),
                    method: "llm".to_string(),
                    fallback_reason: None,
                    model: Some(done.model),
                    prompt_version: Some(PROMPT_VERSION.to_string()),
                    tokens_in: done.usage.prompt_tokens,
                    tokens_out: done.usage.completion_tokens,
                    cost_usd: done.usage.cost_usd,
                    meta: c.meta.clone(),
                    request: c.request.clone(),
                    counts: c.counts.clone(),
                    timings: Default::default(),
                }
            }
            Outcome::Fallback { reason, called } => {
                if s.settings.disable_llm {
                    info!(reason = %reason, "using fallback formatting");
                } else {
                    warn!(reason = %reason, "LLM synthesis failed; using fallback formatting");
                }
                SynthesizedEnhancement {
                    note_text: fallback_note(&c, &reason),
                    method: "fallback".to_string(),
                    fallback_reason: Some(reason),
                    model: None,
                    prompt_version: called.then(|| PROMPT_VERSION.to_string()),
                    tokens_in: None,
                    tokens_out: None,
                    cost_usd: None,
                    meta: c.meta.clone(),
                    request: c.request.clone(),
                    counts: c.counts.clone(),
                    timings: Default::default(),
                }
            }
        };
        timings.insert("synthesize.render".to_string(), elapsed_ms(phase));
        timings.insert("synthesize".to_string(), elapsed_ms(started));
        Ok(StageOutput::Forward(encode(&SynthesizedEnhancement {
            timings,
            ..enhancement
        })?))
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use schemas::{ContextCounts, GatheredContext, IpReference, JobMeta, KbArticle, SimilarTicket, TicketFields};

    /// A ticket with `similar` similar tickets (most similar first), one
    /// article, one known and one unknown address.
    pub(crate) fn context(description: &str, similar: usize) -> GatheredContext {
        GatheredContext {
            meta: JobMeta {
                job_id: "job-1".into(),
                correlation_id: "c".into(),
                tenant_id: "acme".into(),
                ticket_id: "4711".into(),
                event: "request_created".into(),
                webhook_id: "w".into(),
                received_at_ms: 0,
            },
            request: TicketFields {
                subject: Some("VPN drops every hour".into()),
                description: Some(description.into()),
                requester_name: Some("Dana".into()),
                requester_email: None,
                priority: Some("High".into()),
                category: None,
                site: None,
                created_time: None,
                status: None,
            },
            similar_tickets: (0..similar)
                .map(|i| SimilarTicket {
                    ticket_id: format!("{}", 100 + i),
                    subject: Some(format!("VPN disconnects {i}")),
                    summary: None,
                    status: "resolved".into(),
                    similarity: 0.9 - i as f64 * 0.01,
                    resolution: Some("Renewed the client certificate".into()),
                })
                .collect(),
            kb_articles: vec![KbArticle {
                id: "KB-7".into(),
                title: "VPN client certificates".into(),
                url: Some("https://kb.example.test/7".into()),
                snippet: Some("Renew yearly".into()),
                source: "sdp".into(),
            }],
            ips_found: vec!["10.0.0.5".into(), "10.0.0.9".into()],
            hostnames_found: vec![],
            ip_references: vec![IpReference {
                ip: "10.0.0.5".into(),
                asset_name: "vpn-gw-1".into(),
                asset_type: Some("Router".into()),
                owner: Some("NetOps".into()),
                site: Some("HQ".into()),
                hostname: Some("vpn-gw-1.corp".into()),
                source: "sdp".into(),
            }],
            sources: vec![],
            counts: ContextCounts::default(),
            timings: Default::default(),
        }
    }
}
