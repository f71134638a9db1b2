//! OpenAI-compatible chat-completions client (OpenRouter by default).
//!
//! Requests go to `{base_url}/chat/completions`. OpenRouter can report an
//! error inside an HTTP 200 (`error` or `choices[].error`); those are errors
//! here too. 408/429/5xx, timeouts and transport errors are retryable
//! (honouring `Retry-After`); 400/401/402/403/404 never are: they are
//! *rejections*, counted in `ticketflow_llm_rejected_total{status,model}`.
//!
//! Models: an ordered list (`LLM_MODELS`). OpenRouter takes the whole list
//! in one request (its `models` fallback parameter) and routes itself; any
//! other provider gets one request per model, in turn, moving on when a
//! model is unavailable (404, a 400 about the model, 5xx, an empty answer).
//! The model that answered is in [`Completion::model`].
//!
//! Parsing is pure ([`parse_completion`], [`status_error`]) so it can be
//! tested and fuzzed without a server.

use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::metrics::{metrics, observe_external};
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

/// What the provider reported one call used (`usage`); `None` where it did
/// not say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<i64>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<i64>,
    /// `usage.cost` (OpenRouter reports credits, which are US dollars).
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The model that answered: the body's `model`; [`parse_completion`]
    /// leaves it empty when the body does not say, and the client fills in
    /// the model it asked for.
    pub model: String,
    pub usage: Usage,
}

/// One model's failure within a call that tried several.
#[derive(Debug, Clone)]
pub struct ModelFailure {
    pub model: String,
    pub error: LlmError,
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
    #[error("LLM call timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("LLM unreachable: {0}")]
    Transport(String),
    #[error("LLM answer unreadable: {0}")]
    Malformed(String),
    #[error("LLM answered with no text")]
    Empty,
    /// Every configured model failed (client-side model fallback).
    #[error("every model failed: {}", describe(.0))]
    Models(Vec<ModelFailure>),
}

fn describe(failures: &[ModelFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{}: {}", f.model, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}

fn transient_code(code: i64) -> bool {
    matches!(code, 408 | 429 | 500..=599)
}

fn rejection_code(code: i64) -> bool {
    matches!(code, 400..=404)
}

/// Whether a 400's message is about the model (unknown id, no endpoint)
/// rather than the request.
fn about_the_model(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("model") || m.contains("no endpoints")
}

impl LlmError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            LlmError::Status {
                status, retry_after, ..
            } if transient_code(i64::from(*status)) => RetryHint::Retryable { after: *retry_after },
            LlmError::Status { .. } => RetryHint::Permanent,
            LlmError::InBody { code, .. } if transient_code(*code) => RetryHint::Retryable { after: None },
            LlmError::InBody { .. } => RetryHint::Permanent,
            LlmError::Timeout(_) | LlmError::Transport(_) | LlmError::Malformed(_) | LlmError::Empty => {
                RetryHint::Retryable { after: None }
            }
            // Another attempt may help when any model failed transiently;
            // it waits for the longest `Retry-After` any of them asked for.
            LlmError::Models(failures) => {
                let mut hint = RetryHint::Permanent;
                for f in failures {
                    if let RetryHint::Retryable { after } = f.error.retry_hint() {
                        let longest = match hint {
                            RetryHint::Retryable { after: before } => before.max(after),
                            _ => after,
                        };
                        hint = RetryHint::Retryable { after: longest };
                    }
                }
                hint
            }
        }
    }

    /// The status of a rejection: the provider refused the request itself
    /// (400 bad request, 401 key, 402 credit, 403 forbidden, 404 no such
    /// model) and a retry cannot help. For [`LlmError::Models`], the last
    /// model's, when every model was rejected.
    pub fn rejected_status(&self) -> Option<u16> {
        match self {
            LlmError::Status { status, .. } if rejection_code(i64::from(*status)) => Some(*status),
            LlmError::InBody { code, .. } if rejection_code(*code) => Some(*code as u16),
            LlmError::Models(failures) if failures.iter().all(|f| f.error.rejected_status().is_some()) => {
                failures.last().and_then(|f| f.error.rejected_status())
            }
            _ => None,
        }
    }

    /// Whether another model may answer where this one failed: the model is
    /// unknown or unavailable (404, a 400 about the model, 5xx) or answered
    /// nothing usable. Not for failures of the provider as a whole (keys,
    /// credit, rate limits, the network).
    pub fn next_model_may_help(&self) -> bool {
        match self {
            LlmError::Status { status, message, .. } => match status {
                404 | 500..=599 => true,
                400 => about_the_model(message),
                _ => false,
            },
            LlmError::InBody { code, message } => match code {
                404 | 500..=599 => true,
                400 => about_the_model(message),
                _ => false,
            },
            LlmError::Malformed(_) | LlmError::Empty => true,
            LlmError::Timeout(_) | LlmError::Transport(_) | LlmError::Models(_) => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            LlmError::Status { .. } => "http_status",
            LlmError::InBody { .. } => "error_in_body",
            LlmError::Timeout(_) => "timeout",
            LlmError::Transport(_) => "transport",
            LlmError::Malformed(_) => "malformed",
            LlmError::Empty => "empty",
            LlmError::Models(_) => "all_models_failed",
        }
    }
}

/// One chat completion to make.
#[derive(Debug, Clone, Copy)]
pub struct CompletionRequest<'a> {
    pub messages: &'a [ChatMessage],
    pub max_tokens: u32,
    /// Ask for a JSON object (`response_format: {"type": "json_object"}`).
    /// A model that refuses the parameter (a 400 naming it) is asked again
    /// without it.
    pub json_object: bool,
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<Secret>,
    timeout: Duration,
    /// Models in order of preference; never empty.
    models: Vec<String>,
    /// Send the whole list as OpenRouter's `models` parameter instead of
    /// trying the models in turn here.
    provider_routing: bool,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("base_url", &self.base_url)
            .field("models", &self.models)
            .field("provider_routing", &self.provider_routing)
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
        .or_else(|| e.as_str())
        .unwrap_or("unknown error")
        .to_string();
    Some((code, message))
}

/// Whether `base_url` is OpenRouter's API (which routes a `models` list
/// itself).
pub fn is_openrouter(base_url: &str) -> bool {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h == "openrouter.ai" || h.ends_with(".openrouter.ai"))
        })
        .unwrap_or(false)
}

/// The error of a non-2xx answer: its status, the provider's message (or
/// the start of the body) and `Retry-After`.
pub fn status_error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> LlmError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(error_of)
        .map(|(_, m)| m)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    LlmError::Status {
        status,
        message,
        retry_after,
    }
}

/// Reads the body of an HTTP 200 answer: the first choice's text, the model
/// that answered and the usage, or the error reported inside it.
pub fn parse_completion(body: &[u8]) -> Result<Completion, LlmError> {
    let parsed: Value = serde_json::from_slice(body).map_err(|_| LlmError::Malformed("body is not JSON".into()))?;
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
    let usage = parsed.get("usage");
    let int = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_i64).filter(|n| *n >= 0);
    Ok(Completion {
        text: text.to_string(),
        model: parsed
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        usage: Usage {
            prompt_tokens: int("prompt_tokens"),
            completion_tokens: int("completion_tokens"),
            cost_usd: usage
                .and_then(|u| u.get("cost"))
                .and_then(Value::as_f64)
                .filter(|c| c.is_finite() && *c >= 0.0),
        },
    })
}

/// The JSON body of one request for `models` (the first is `model`; more
/// than one go as OpenRouter's `models` fallback list).
pub fn request_body(models: &[String], req: &CompletionRequest<'_>, json_object: bool) -> Value {
    let mut body = serde_json::json!({
        "model": models.first().map(String::as_str).unwrap_or_default(),
        "messages": req.messages,
        "max_tokens": req.max_tokens,
        "temperature": 0.2,
    });
    if models.len() > 1 {
        body["models"] = serde_json::json!(models);
    }
    if json_object {
        body["response_format"] = serde_json::json!({"type": "json_object"});
    }
    body
}

impl LlmClient {
    /// A client for one model; [`LlmClient::with_models`] sets a list.
    /// `timeout` bounds each request.
    pub fn new(
        base_url: impl Into<String>,
        api_key: Option<Secret>,
        model: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .build()
            .expect("reqwest client builds");
        let base_url = base_url.into();
        LlmClient {
            http,
            provider_routing: is_openrouter(&base_url),
            base_url,
            api_key,
            timeout,
            models: vec![model.into()],
        }
    }

    /// Models in order of preference (an empty list keeps the current one).
    pub fn with_models(mut self, models: Vec<String>) -> Self {
        if !models.is_empty() {
            self.models = models;
        }
        self
    }

    /// Whether the provider routes the model list (OpenRouter's `models`
    /// parameter; on by default for an openrouter.ai base URL) or this
    /// client tries the models in turn.
    pub fn with_provider_routing(mut self, on: bool) -> Self {
        self.provider_routing = on;
        self
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// The first model of the list.
    pub fn model(&self) -> &str {
        &self.models[0]
    }

    /// A plain-text completion.
    pub async fn complete(&self, messages: &[ChatMessage], max_tokens: u32) -> Result<Completion, LlmError> {
        self.complete_with(&CompletionRequest {
            messages,
            max_tokens,
            json_object: false,
        })
        .await
    }

    /// A completion from the first model that answers.
    pub async fn complete_with(&self, req: &CompletionRequest<'_>) -> Result<Completion, LlmError> {
        if self.provider_routing || self.models.len() == 1 {
            return self.complete_on(&self.models, req).await;
        }
        let mut failures: Vec<ModelFailure> = Vec::new();
        for model in &self.models {
            match self.complete_on(std::slice::from_ref(model), req).await {
                Ok(c) => return Ok(c),
                Err(error) => {
                    let go_on = error.next_model_may_help();
                    if go_on {
                        tracing::warn!(model = %model, error = %error, "LLM model failed; trying the next model");
                    }
                    failures.push(ModelFailure {
                        model: model.clone(),
                        error,
                    });
                    if !go_on {
                        break;
                    }
                }
            }
        }
        Err(if failures.len() == 1 {
            failures.remove(0).error
        } else {
            LlmError::Models(failures)
        })
    }

    /// One request for `models` (with JSON mode when asked, again without
    /// it when the model refuses the parameter).
    async fn complete_on(&self, models: &[String], req: &CompletionRequest<'_>) -> Result<Completion, LlmError> {
        let first = self.instrumented(models, req, req.json_object).await;
        match first {
            Err(LlmError::Status {
                status: 400,
                ref message,
                ..
            }) if req.json_object && message.to_ascii_lowercase().contains("response_format") => {
                tracing::info!(model = %models[0], "model refuses response_format; asking again without it");
                self.instrumented(models, req, false).await
            }
            other => other,
        }
    }

    async fn instrumented(
        &self,
        models: &[String],
        req: &CompletionRequest<'_>,
        json_object: bool,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let span = self.client_span(&models[0]);
        let result = self.call(models, req, json_object).instrument(span.clone()).await;
        match &result {
            Ok(c) => {
                span.record("gen_ai.response.model", c.model.as_str());
                if let Some(n) = c.usage.prompt_tokens {
                    span.record("gen_ai.usage.input_tokens", n);
                }
                if let Some(n) = c.usage.completion_tokens {
                    span.record("gen_ai.usage.output_tokens", n);
                }
            }
            Err(e) => {
                span.record("otel.status_code", "error");
                span.record("otel.status_description", e.to_string());
                span.record("error.type", e.kind());
                if let Some(status) = e.rejected_status() {
                    metrics()
                        .llm_rejected
                        .with_label_values(&[&status.to_string(), &models[0]])
                        .inc();
                }
            }
        }
        observe_external("llm", result.is_ok(), started);
        result
    }

    /// The OpenTelemetry client span of one chat completion (HTTP and GenAI
    /// semantic conventions; the URL without credentials). Its target is the
    /// one `processors::trace::TARGET` names: traces only, not the logs.
    fn client_span(&self, model: &str) -> tracing::Span {
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
            otel.name = %format_args!("chat {model}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            error.type = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.request.model = %model,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            http.request.method = "POST",
            http.response.status_code = tracing::field::Empty,
            url.full = %parsed.as_ref().map_or(url.as_str(), |u| u.as_str()),
            server.address = parsed.as_ref().and_then(|u| u.host_str()).unwrap_or_default(),
            server.port = parsed.as_ref().and_then(|u| u.port_or_known_default()).unwrap_or_default(),
            peer.service = "llm",
        )
    }

    fn transport(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.timeout)
        } else {
            LlmError::Transport(e.without_url().to_string())
        }
    }

    async fn call(
        &self,
        models: &[String],
        req: &CompletionRequest<'_>,
        json_object: bool,
    ) -> Result<Completion, LlmError> {
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let mut rb = self.http.post(url).json(&request_body(models, req, json_object));
        if let Some(key) = &self.api_key {
            rb = rb.bearer_auth(key.expose());
        }
        let resp = rb.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.bytes().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(status_error(status.as_u16(), retry_after, &body));
        }
        let mut c = parse_completion(&body)?;
        if c.model.is_empty() {
            c.model = models[0].clone();
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_model_and_usage_with_cost() {
        let c = parse_completion(
            br#"{"model":"m/x","choices":[{"message":{"content":" hi "}}],
                "usage":{"prompt_tokens":12,"completion_tokens":3,"cost":0.00042}}"#,
        )
        .unwrap();
        assert_eq!(c.text, "hi");
        assert_eq!(c.model, "m/x");
        assert_eq!(
            c.usage,
            Usage {
                prompt_tokens: Some(12),
                completion_tokens: Some(3),
                cost_usd: Some(0.00042)
            }
        );
        let bare = parse_completion(br#"{"choices":[{"message":{"content":"x"}}]}"#).unwrap();
        assert_eq!((bare.model.as_str(), bare.usage), ("", Usage::default()));
    }

    #[test]
    fn errors_inside_200_and_bad_bodies_are_errors() {
        let e = parse_completion(br#"{"error":{"code":503,"message":"overloaded"}}"#).unwrap_err();
        assert!(matches!(e, LlmError::InBody { code: 503, .. }));
        assert!(e.retry_hint().is_retryable());
        let e = parse_completion(br#"{"choices":[{"error":{"code":"401","message":"no key"}}]}"#).unwrap_err();
        assert_eq!(e.rejected_status(), Some(401));
        assert!(matches!(parse_completion(b"<html>"), Err(LlmError::Malformed(_))));
        assert!(matches!(
            parse_completion(br#"{"choices":[]}"#),
            Err(LlmError::Malformed(_))
        ));
        assert!(matches!(
            parse_completion(br#"{"choices":[{"message":{"content":"  "}}]}"#),
            Err(LlmError::Empty)
        ));
    }

    #[test]
    fn statuses_are_classified_for_retries_rejections_and_model_fallback() {
        let e = status_error(503, Some(Duration::from_secs(2)), br#"{"error":{"message":"busy"}}"#);
        assert_eq!(
            e.retry_hint(),
            RetryHint::Retryable {
                after: Some(Duration::from_secs(2))
            }
        );
        assert!(e.next_model_may_help() && e.rejected_status().is_none());
        for s in [400, 401, 402, 403, 404] {
            let e = status_error(s, None, b"nope");
            assert_eq!(e.retry_hint(), RetryHint::Permanent, "{s}");
            assert_eq!(e.rejected_status(), Some(s));
        }
        assert!(!status_error(401, None, b"bad key").next_model_may_help());
        assert!(!status_error(429, None, b"slow down").next_model_may_help());
        assert!(status_error(404, None, b"No endpoints found for x").next_model_may_help());
        assert!(
            status_error(400, None, br#"{"error":{"message":"foo is not a valid model ID"}}"#).next_model_may_help()
        );
        assert!(!status_error(400, None, br#"{"error":{"message":"messages too long"}}"#).next_model_may_help());
        assert!(status_error(429, None, b"").retry_hint().is_retryable());
        assert!(LlmError::Timeout(Duration::from_secs(1)).retry_hint().is_retryable());
    }

    #[test]
    fn several_failed_models_retry_when_any_was_transient() {
        let f = |model: &str, error: LlmError| ModelFailure {
            model: model.into(),
            error,
        };
        let mixed = LlmError::Models(vec![
            f("a", status_error(404, None, b"gone")),
            f("b", status_error(503, Some(Duration::from_secs(3)), b"busy")),
        ]);
        assert_eq!(
            mixed.retry_hint(),
            RetryHint::Retryable {
                after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(mixed.rejected_status(), None);
        assert!(mixed.to_string().contains("a: LLM answered HTTP 404"), "{mixed}");
        let rejected = LlmError::Models(vec![
            f("a", status_error(404, None, b"gone")),
            f("b", status_error(400, None, b"unknown model b")),
        ]);
        assert_eq!(rejected.retry_hint(), RetryHint::Permanent);
        assert_eq!(rejected.rejected_status(), Some(400));
    }

    #[test]
    fn request_body_sends_the_model_list_and_json_mode() {
        let msgs = [ChatMessage::user("x")];
        let req = CompletionRequest {
            messages: &msgs,
            max_tokens: 10,
            json_object: true,
        };
        let one = request_body(&["a".to_string()], &req, true);
        assert_eq!(one["model"], "a");
        assert!(one.get("models").is_none());
        assert_eq!(one["response_format"]["type"], "json_object");
        let two = request_body(&["a".to_string(), "b".to_string()], &req, false);
        assert_eq!(two["models"], serde_json::json!(["a", "b"]));
        assert!(two.get("response_format").is_none());
        assert!(is_openrouter("https://openrouter.ai/api/v1"));
        assert!(!is_openrouter("http://127.0.0.1:9/v1"));
        assert!(!is_openrouter("https://openrouter.ai.example.com/v1"));
    }
}
