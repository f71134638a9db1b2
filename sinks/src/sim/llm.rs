//! An OpenAI-compatible chat-completions simulator
//! (`POST /chat/completions` and `/v1/chat/completions`).
//!
//! Its answer is built from the prompt, so a note shows which ticket it was
//! written for: prose, or the JSON object `{summary, likely_cause, steps}`
//! when the request asks for `response_format: json_object`. Every answer
//! carries `usage` (tokens and an OpenRouter-style `cost`). A `models` list
//! is routed the way OpenRouter does: the first model that can answer does.
//!
//! Faults: an HTTP status (with `Retry-After`), an error inside HTTP 200, a
//! hang past the client's timeout — for every request, or only for the next
//! N ([`LlmSimulator::fail_next`]); per model: unavailable (404), a status,
//! or no JSON mode. It records what it was sent: models, prompt, body size.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::Latency;

/// Simulated price per token, US dollars (prompt, completion).
const PRICE_PER_TOKEN: (f64, f64) = (0.15e-6, 0.60e-6);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmFault {
    /// Answers this HTTP status with an OpenAI-style error body.
    Status { status: u16, retry_after_secs: Option<u64> },
    /// HTTP 200 whose body carries `error` (OpenRouter does this).
    ErrorInside200,
    /// Never answers within `for_`.
    Hang { for_: Duration },
}

/// How the simulator treats requests for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelBehaviour {
    /// 404 "No endpoints found" (unknown or withdrawn model).
    Unavailable,
    /// Answers this HTTP status with an error body.
    Status(u16),
    /// A 400 naming `response_format` when JSON mode is asked for.
    NoJsonMode,
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedLlmRequest {
    /// The `model` field.
    pub model: String,
    /// The `models` fallback list, when sent.
    pub models: Option<Vec<String>>,
    /// Bytes of the request body.
    pub body_bytes: usize,
    /// Characters of all messages' contents together.
    pub prompt_chars: usize,
    /// Whether `response_format: json_object` was asked for.
    pub json_mode: bool,
}

#[derive(Default)]
struct Inner {
    fault: Option<LlmFault>,
    next_faults: VecDeque<LlmFault>,
    models: HashMap<String, ModelBehaviour>,
    latency: Latency,
    requests: u64,
    received: Vec<RecordedLlmRequest>,
    last_prompt: Option<String>,
    last_auth: Option<String>,
}

type Shared = Arc<Mutex<Inner>>;

pub struct LlmSimulator {
    addr: SocketAddr,
    inner: Shared,
    handle: JoinHandle<()>,
}

impl Drop for LlmSimulator {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl LlmSimulator {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let inner: Shared = Arc::default();
        let router = Router::new()
            .route("/chat/completions", post(complete))
            .route("/v1/chat/completions", post(complete))
            // Oversized prompts arrive and are measured, not refused.
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(inner.clone());
        let (addr, handle) = super::serve(addr, router).await?;
        Ok(LlmSimulator { addr, inner, handle })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("simulator lock"))
    }

    /// What `LLM_BASE_URL` should be set to.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A fault for every request from now on (`None`: answer).
    pub fn set_fault(&self, fault: Option<LlmFault>) {
        self.with(|i| i.fault = fault);
    }

    /// `fault` for the next `n` requests only (before any [`set_fault`]
    /// fault), then answers again.
    ///
    /// [`set_fault`]: LlmSimulator::set_fault
    pub fn fail_next(&self, n: usize, fault: LlmFault) {
        self.with(|i| i.next_faults.extend(std::iter::repeat_n(fault, n)));
    }

    /// How requests for `model` are treated (`None`: it answers).
    pub fn set_model(&self, model: &str, behaviour: Option<ModelBehaviour>) {
        self.with(|i| match behaviour {
            Some(b) => {
                i.models.insert(model.to_string(), b);
            }
            None => {
                i.models.remove(model);
            }
        });
    }

    pub fn set_latency(&self, latency: Latency) {
        self.with(|i| i.latency = latency);
    }

    /// Chat-completion requests received.
    pub fn requests(&self) -> u64 {
        self.with(|i| i.requests)
    }

    /// Every request received, in order.
    pub fn received(&self) -> Vec<RecordedLlmRequest> {
        self.with(|i| i.received.clone())
    }

    pub fn last_prompt(&self) -> Option<String> {
        self.with(|i| i.last_prompt.clone())
    }

    /// The `Authorization` header of the last request.
    pub fn last_auth(&self) -> Option<String> {
        self.with(|i| i.last_auth.clone())
    }
}

fn error_body(status: u16, message: &str) -> Value {
    json!({"error": {"code": status, "message": message}})
}

fn error_response(status: u16, message: &str, retry_after_secs: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut r = (code, Json(error_body(status, message))).into_response();
    if let Some(s) = retry_after_secs {
        r.headers_mut()
            .insert("retry-after", s.to_string().parse().expect("digits"));
    }
    r
}

/// What a technician can use, derived from the prompt's lines: (summary,
/// likely cause, steps).
fn answer_for(prompt: &str) -> (String, String, Vec<String>) {
    let line = |prefix: &str| {
        prompt
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .filter(|v| !v.is_empty())
    };
    let subject = line("Subject:").unwrap_or_else(|| "the reported problem".into());
    let similar: Vec<&str> = prompt
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- #"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let kb = prompt.lines().filter(|l| l.trim_start().starts_with("- KB ")).count();
    let assets = prompt
        .lines()
        .filter(|l| l.trim_start().starts_with("- Asset "))
        .count();
    let summary = format!("The requester reports \"{subject}\".");
    let cause = match similar.first() {
        Some(first) => format!(
            "Consistent with {} similar past ticket(s), most closely #{first}; {assets} affected asset(s) in inventory.",
            similar.len()
        ),
        None => format!("No similar past ticket found; {assets} affected asset(s) in inventory."),
    };
    let steps = vec![
        "Confirm the scope with the requester and check the affected assets.".to_string(),
        format!("Apply the fix of the {kb} linked knowledge-base article(s) first."),
        "Escalate if the issue persists after the documented fix.".to_string(),
    ];
    (summary, cause, steps)
}

fn tokens_of(chars: usize) -> i64 {
    chars.div_ceil(4) as i64
}

async fn complete(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let prompt = parsed
        .as_ref()
        .and_then(|b| b.get("messages"))
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let model = parsed
        .as_ref()
        .and_then(|b| b.get("model"))
        .and_then(Value::as_str)
        .unwrap_or("sim/ticketflow-1")
        .to_string();
    let models: Option<Vec<String>> = parsed
        .as_ref()
        .and_then(|b| b.get("models"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
    let json_mode = parsed
        .as_ref()
        .and_then(|b| b.pointer("/response_format/type"))
        .and_then(Value::as_str)
        == Some("json_object");
    let (fault, latency, behaviours) = {
        let mut i = inner.lock().expect("simulator lock");
        i.requests += 1;
        i.last_auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        i.received.push(RecordedLlmRequest {
            model: model.clone(),
            models: models.clone(),
            body_bytes: body.len(),
            prompt_chars: prompt.chars().count(),
            json_mode,
        });
        i.last_prompt = Some(prompt.clone());
        let fault = i.next_faults.pop_front().or(i.fault);
        (fault, i.latency, i.models.clone())
    };
    latency.wait().await;
    match fault {
        Some(LlmFault::Status {
            status,
            retry_after_secs,
        }) => return error_response(status, "simulated upstream failure", retry_after_secs),
        Some(LlmFault::ErrorInside200) => return Json(error_body(502, "provider returned error")).into_response(),
        Some(LlmFault::Hang { for_ }) => tokio::time::sleep(for_).await,
        None => {}
    }
    let Some(parsed) = parsed else {
        return error_response(400, "request body is not JSON", None);
    };
    if parsed
        .get("messages")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty())
    {
        return error_response(400, "messages is required", None);
    }
    // OpenRouter-style routing: the first model of the list that answers.
    let candidates = models.filter(|m| !m.is_empty()).unwrap_or_else(|| vec![model]);
    let mut refusal = None;
    let mut answering = None;
    for m in &candidates {
        match behaviours.get(m) {
            Some(ModelBehaviour::Unavailable) => refusal = Some((404, format!("No endpoints found for {m}."))),
            Some(ModelBehaviour::Status(s)) => refusal = Some((*s, format!("{m} failed upstream"))),
            Some(ModelBehaviour::NoJsonMode) if json_mode => {
                refusal = Some((400, format!("response_format is not supported by {m}")))
            }
            _ => {
                answering = Some(m.clone());
                break;
            }
        }
    }
    let Some(answering) = answering else {
        let (status, message) = refusal.expect("a refusal for every candidate");
        return error_response(status, &message, None);
    };
    let (summary, cause, steps) = answer_for(&prompt);
    let content = if json_mode {
        json!({"summary": summary, "likely_cause": cause, "steps": steps}).to_string()
    } else {
        let numbered: Vec<String> = steps
            .iter()
            .enumerate()
            .map(|(n, s)| format!("{}. {s}", n + 1))
            .collect();
        format!(
            "Summary: {summary}\nLikely cause: {cause}\nSuggested steps:\n{}",
            numbered.join("\n")
        )
    };
    let (tin, tout) = (tokens_of(prompt.chars().count()), tokens_of(content.chars().count()));
    let cost = tin as f64 * PRICE_PER_TOKEN.0 + tout as f64 * PRICE_PER_TOKEN.1;
    Json(json!({
        "id": format!("gen-{}", uuid::Uuid::new_v4()),
        "object": "chat.completion",
        "model": answering,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout, "cost": cost}
    }))
    .into_response()
}
