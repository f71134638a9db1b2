//! The JSON error body of every failure: `{"error": {"code", "message"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(5)
    }
    /// The source's budget of failed authentication is spent
    /// ([`crate::sources`]).
    pub fn source_rate_limited(retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "source_rate_limited",
            "too many failed authentications from this address; retry later",
        )
        .retry_after(retry_after_secs)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(s) = self.retry_after_secs {
            r.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        r
    }
}

/// A store failure, answered to anyone (most callers are not authenticated
/// yet when the store is asked): a code and a generic message with a
/// correlation id; the store's own text goes only to the log, under that id.
impl From<sinks::store::StoreError> for ApiError {
    fn from(e: sinks::store::StoreError) -> Self {
        let correlation_id = uuid::Uuid::now_v7().to_string();
        tracing::error!(correlation_id = %correlation_id, error = %e, "store error");
        ApiError::unavailable(
            "store_unavailable",
            format!("the store is unavailable; retry shortly (correlation id {correlation_id})"),
        )
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn store_errors_answer_a_code_and_a_generic_message() {
        let detail = "disk I/O error at /var/lib/ticketflow/store.db: tenants table";
        let e = ApiError::from(sinks::store::StoreError::Unavailable(detail.into()));
        let (status, retry, body) = body_of(e).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("5"));
        assert_eq!(body["error"]["code"], "store_unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("disk") && !message.contains("/var/lib") && !message.contains("tenants"));
        assert!(message.contains("correlation id "), "{message}");
        assert_eq!(body["error"].as_object().unwrap().len(), 2, "only code and message");
    }

    #[tokio::test]
    async fn the_source_limit_says_when_to_come_back() {
        let (status, retry, body) = body_of(ApiError::source_rate_limited(7)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("7"));
        assert_eq!(body["error"]["code"], "source_rate_limited");
    }
}
