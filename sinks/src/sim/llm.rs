//! An OpenAI-compatible chat-completions simulator
//! (`POST /chat/completions` and `/v1/chat/completions`).
//!
//! Its answer is built from the prompt, so a note shows which ticket it was
//! written for; faults: an HTTP status (with `Retry-After`), an error inside
//! HTTP 200, or a hang past the client's timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::Latency;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmFault {
    /// Answers this HTTP status with an OpenAI-style error body.
    Status { status: u16, retry_after_secs: Option<u64> },
    /// HTTP 200 whose body carries `error` (OpenRouter does this).
    ErrorInside200,
    /// Never answers within `for_`.
    Hang { for_: Duration },
}

#[derive(Default)]
struct Inner {
    fault: Option<LlmFault>,
    latency: Latency,
    requests: u64,
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
            .with_state(inner.clone());
        let (addr, handle) = super::serve(addr, router).await?;
        Ok(LlmSimulator { addr, inner, handle })
    }

    /// What `LLM_BASE_URL` should be set to.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set_fault(&self, fault: Option<LlmFault>) {
        self.inner.lock().expect("simulator lock").fault = fault;
    }

    pub fn set_latency(&self, latency: Latency) {
        self.inner.lock().expect("simulator lock").latency = latency;
    }

    /// Chat-completion requests received.
    pub fn requests(&self) -> u64 {
        self.inner.lock().expect("simulator lock").requests
    }

    pub fn last_prompt(&self) -> Option<String> {
        self.inner.lock().expect("simulator lock").last_prompt.clone()
    }

    /// The `Authorization` header of the last request.
    pub fn last_auth(&self) -> Option<String> {
        self.inner.lock().expect("simulator lock").last_auth.clone()
    }
}

fn error_body(status: u16, message: &str) -> Value {
    json!({"error": {"code": status, "message": message}})
}

/// A summary that a technician can use, derived from the prompt's lines.
fn answer_for(prompt: &str) -> String {
    let line = |prefix: &str| {
        prompt
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .filter(|v| !v.is_empty())
    };
    let subject = line("Subject:").unwrap_or_else(|| "the reported problem".into());
    let similar = prompt
        .lines()
        .filter(|l| l.trim_start().starts_with("- Ticket "))
        .count();
    let kb = prompt.lines().filter(|l| l.trim_start().starts_with("- KB ")).count();
    let assets = prompt.lines().filter(|l| l.trim_start().starts_with("- IP ")).count();
    format!(
        "Summary: The requester reports \"{subject}\".\n\
         Likely cause: consistent with {similar} similar past ticket(s) and {assets} affected asset(s) in inventory.\n\
         Suggested steps:\n1. Confirm scope with the requester and check the affected assets.\n\
         2. Apply the {kb} linked knowledge-base article(s) first.\n3. Escalate if the issue persists after the documented fix."
    )
}

async fn complete(State(inner): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let (fault, latency) = {
        let mut i = inner.lock().expect("simulator lock");
        i.requests += 1;
        i.last_auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let prompt = body
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|m| m.get("content").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        i.last_prompt = Some(prompt);
        (i.fault, i.latency)
    };
    latency.wait().await;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("sim/ticketflow-1")
        .to_string();
    match fault {
        Some(LlmFault::Status {
            status,
            retry_after_secs,
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut r = (code, Json(error_body(status, "simulated upstream failure"))).into_response();
            if let Some(s) = retry_after_secs {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().expect("digits"));
            }
            return r;
        }
        Some(LlmFault::ErrorInside200) => return Json(error_body(502, "provider returned error")).into_response(),
        Some(LlmFault::Hang { for_ }) => tokio::time::sleep(for_).await,
        None => {}
    }
    if body
        .get("messages")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty())
    {
        return (StatusCode::BAD_REQUEST, Json(error_body(400, "messages is required"))).into_response();
    }
    let prompt = inner
        .lock()
        .expect("simulator lock")
        .last_prompt
        .clone()
        .unwrap_or_default();
    Json(json!({
        "id": format!("gen-{}", uuid::Uuid::new_v4()),
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer_for(&prompt)}}],
        "usage": {"prompt_tokens": prompt.len() / 4, "completion_tokens": 80, "total_tokens": prompt.len() / 4 + 80}
    }))
    .into_response()
}
