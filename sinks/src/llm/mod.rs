//! OpenAI-compatible chat-completions client (OpenRouter by default).
//!
//! Requests go to `{base_url}/chat/completions`. OpenRouter can report an
//! error inside an HTTP 200 (`error` or `choices[].error`); those are errors
//! here too. 408/429/502/503 are retryable (honouring `Retry-After`);
//! 400/401/402/403 never are.

use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::metrics::observe_external;
use crate::{parse_retry_after, RetryHint, Secret};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "system".into(),
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub model: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("LLM answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("LLM reported an error inside HTTP 200 (code {code}): {message}")]
    InBody { code: i64, message: String },
    #[error("LLM unreachable: {0}")]
    Transport(String),
    #[error("LLM answer unreadable: {0}")]
    Malformed(String),
    #[error("LLM answered with no text")]
    Empty,
}

impl LlmError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            LlmError::Status {
                status, retry_after, ..
            } => match status {
                408 | 429 | 500 | 502 | 503 | 504 => RetryHint::Retryable { after: *retry_after },
                _ => RetryHint::Permanent,
            },
            LlmError::InBody { code, .. } => match code {
                408 | 429 | 500 | 502 | 503 | 504 => RetryHint::Retryable { after: None },
                _ => RetryHint::Permanent,
            },
            LlmError::Transport(_) | LlmError::Malformed(_) | LlmError::Empty => RetryHint::Retryable { after: None },
        }
    }
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<Secret>,
    pub model: String,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish()
    }
}

fn error_of(v: &Value) -> Option<(i64, String)> {
    let e = v.get("error").filter(|e| !e.is_null())?;
    let code = e
        .get("code")
        .and_then(|c| c.as_i64().or_else(|| c.as_str().and_then(|s| s.parse().ok())))
        .unwrap_or(0);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("unknown error")
        .to_string();
    Some((code, message))
}

impl LlmClient {
    pub fn new(
        base_url: impl Into<String>,
        api_key: Option<Secret>,
        model: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client builds");
        LlmClient {
            http,
            base_url: base_url.into(),
            api_key,
            model: model.into(),
        }
    }

    pub async fn complete(&self, messages: &[ChatMessage], max_tokens: u32) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let span = self.client_span();
        let result = self.call(messages, max_tokens).instrument(span.clone()).await;
        match &result {
            Ok(c) => {
                span.record("gen_ai.response.model", c.model.as_str());
            }
            Err(e) => {
                span.record("otel.status_code", "error");
                span.record("otel.status_description", e.to_string());
                span.record(
                    "error.type",
                    match e {
                        LlmError::Status { .. } => "http_status",
                        LlmError::InBody { .. } => "error_in_body",
                        LlmError::Transport(_) => "transport",
                        LlmError::Malformed(_) => "malformed",
                        LlmError::Empty => "empty",
                    },
                );
            }
        }
        observe_external("llm", result.is_ok(), started);
        result
    }

    /// The OpenTelemetry client span of one chat completion (HTTP and GenAI
    /// semantic conventions; the URL without credentials). Its target is the
    /// one `processors::trace::TARGET` names: traces only, not the logs.
    fn client_span(&self) -> tracing::Span {
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let parsed = reqwest::Url::parse(&url).ok().map(|mut u| {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u
        });
        tracing::info_span!(
            target: "trace_spans",
            "llm",
            otel.name = %format_args!("chat {}", self.model),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            error.type = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.request.model = %self.model,
            gen_ai.response.model = tracing::field::Empty,
            http.request.method = "POST",
            http.response.status_code = tracing::field::Empty,
            url.full = %parsed.as_ref().map_or(url.as_str(), |u| u.as_str()),
            server.address = parsed.as_ref().and_then(|u| u.host_str()).unwrap_or_default(),
            server.port = parsed.as_ref().and_then(|u| u.port_or_known_default()).unwrap_or_default(),
            peer.service = "llm",
        )
    }

    async fn call(&self, messages: &[ChatMessage], max_tokens: u32) -> Result<Completion, LlmError> {
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let mut rb = self.http.post(url).json(&serde_json::json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.2,
        }));
        if let Some(key) = &self.api_key {
            rb = rb.bearer_auth(key.expose());
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| LlmError::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp
            .text()
            .await
            .map_err(|e| LlmError::Transport(e.without_url().to_string()))?;
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        if !status.is_success() {
            let message = parsed
                .as_ref()
                .and_then(error_of)
                .map(|(_, m)| m)
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(LlmError::Status {
                status: status.as_u16(),
                message,
                retry_after,
            });
        }
        let parsed = parsed.ok_or_else(|| LlmError::Malformed("body is not JSON".into()))?;
        if let Some((code, message)) = error_of(&parsed) {
            return Err(LlmError::InBody { code, message });
        }
        let choice = parsed
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .ok_or_else(|| LlmError::Malformed("no choices".into()))?;
        if let Some((code, message)) = error_of(choice) {
            return Err(LlmError::InBody { code, message });
        }
        let text = choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        if text.is_empty() {
            return Err(LlmError::Empty);
        }
        Ok(Completion {
            text: text.to_string(),
            model: parsed
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(&self.model)
                .to_string(),
        })
    }
}
