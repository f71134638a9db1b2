//! The `response_status` envelope every SDP v3 answer carries.
//!
//! Shapes seen from SDP (cloud and on-prem builds differ):
//! - an object on single reads and writes:
//!   `{"response_status": {"status_code": 2000, "status": "success"}}`;
//! - an array on list reads and bulk writes, one entry per item:
//!   `{"response_status": [{"status_code": 2000, "status": "success"}]}`;
//! - a failure: `status_code` 4000 (or another non-2000 code) with
//!   `messages: [{"status_code": 4022, "type": "failed", "message": "..",
//!   "field": ".."}]`, the most specific code being the message's. Codes
//!   arrive as numbers or as numeric strings.
//!
//! A failure can arrive inside HTTP 200, so the body decides, not the HTTP
//! status. [`parse_envelope`] is pure and total (any bytes in, never a
//! panic), so a fuzz target can drive it.

use serde_json::Value;

/// The code SDP uses for success.
pub const SDP_SUCCESS: i64 = 2000;

/// One entry of `messages[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusMessage {
    pub status_code: Option<i64>,
    pub message: Option<String>,
    /// `type` (`failed`, `warning`, ...).
    pub kind: Option<String>,
    /// The input field the message is about, when SDP names one.
    pub field: Option<String>,
}

/// One `response_status` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseStatus {
    pub status_code: Option<i64>,
    /// `status` (`success` / `failed`).
    pub status: Option<String>,
    pub messages: Vec<StatusMessage>,
}

impl ResponseStatus {
    /// A 2000 code, or (without a code) `status: success`; and no message
    /// carrying a failure code.
    pub fn is_success(&self) -> bool {
        let code_ok = match self.status_code {
            Some(c) => c == SDP_SUCCESS,
            None => self
                .status
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("success")),
        };
        code_ok
            && self
                .messages
                .iter()
                .all(|m| m.status_code.is_none_or(|c| c == SDP_SUCCESS))
    }

    /// The most specific failure code: the first message's non-2000 code,
    /// else the entry's own code, else 4000 (SDP's generic failure).
    pub fn failure_code(&self) -> i64 {
        self.messages
            .iter()
            .filter_map(|m| m.status_code)
            .find(|c| *c != SDP_SUCCESS)
            .or(self.status_code.filter(|c| *c != SDP_SUCCESS))
            .unwrap_or(4000)
    }

    /// SDP's own words for the failure: the messages' texts (with the field
    /// they name), else the `status` word.
    pub fn failure_message(&self) -> String {
        let texts: Vec<String> = self
            .messages
            .iter()
            .filter_map(|m| {
                let text = m.message.as_deref().filter(|t| !t.is_empty())?;
                Some(match &m.field {
                    Some(f) => format!("{text} (field: {f})"),
                    None => text.to_string(),
                })
            })
            .collect();
        if texts.is_empty() {
            self.status.clone().unwrap_or_else(|| "failed".to_string())
        } else {
            texts.join("; ")
        }
    }
}

/// What an SDP body's envelope says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Every entry succeeded.
    Success,
    /// At least one entry failed: its code and SDP's message.
    Failure {
        status_code: i64,
        message: String,
        statuses: Vec<ResponseStatus>,
    },
    /// The body has no readable `response_status`: not an SDP v3 answer
    /// (a proxy's error page, a load balancer's JSON).
    Missing,
}

/// Why a body could not be read as an SDP answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
}

fn code_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn entry(v: &Value) -> Option<ResponseStatus> {
    let o = v.as_object()?;
    let messages = match o.get("messages") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|m| {
                let m = m.as_object()?;
                Some(StatusMessage {
                    status_code: code_of(m.get("status_code")),
                    message: text_of(m.get("message")),
                    kind: text_of(m.get("type")),
                    field: text_of(m.get("field")),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let status = ResponseStatus {
        status_code: code_of(o.get("status_code")),
        status: text_of(o.get("status")),
        messages,
    };
    (status.status_code.is_some() || status.status.is_some() || !status.messages.is_empty()).then_some(status)
}

/// The `response_status` entries of an SDP body: one for the object shape,
/// one per element for the array shape; empty when there is none.
pub fn response_statuses(body: &Value) -> Vec<ResponseStatus> {
    match body.get("response_status") {
        Some(Value::Array(list)) => list.iter().filter_map(entry).collect(),
        Some(v) => entry(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Reads the envelope of a parsed SDP body.
pub fn parse_response_status(body: &Value) -> Envelope {
    let statuses = response_statuses(body);
    if statuses.is_empty() {
        return Envelope::Missing;
    }
    match statuses.iter().find(|s| !s.is_success()) {
        None => Envelope::Success,
        Some(failed) => Envelope::Failure {
            status_code: failed.failure_code(),
            message: failed.failure_message(),
            statuses: statuses.clone(),
        },
    }
}

/// Reads the envelope of raw SDP response bytes; returns the parsed body
/// with it.
pub fn parse_envelope(bytes: &[u8]) -> Result<(Value, Envelope), EnvelopeError> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let envelope = parse_response_status(&body);
    Ok((body, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(s: &str) -> Envelope {
        parse_envelope(s.as_bytes()).unwrap().1
    }

    #[test]
    fn object_success() {
        assert_eq!(
            env(r#"{"response_status":{"status_code":2000,"status":"success"},"request":{}}"#),
            Envelope::Success
        );
    }

    #[test]
    fn array_success() {
        assert_eq!(
            env(r#"{"response_status":[{"status_code":2000,"status":"success"}],"notes":[]}"#),
            Envelope::Success
        );
        // Codes as strings, and no code but status success.
        assert_eq!(
            env(r#"{"response_status":[{"status_code":"2000"}]}"#),
            Envelope::Success
        );
        assert_eq!(env(r#"{"response_status":{"status":"success"}}"#), Envelope::Success);
    }

    #[test]
    fn object_failure_inside_200_carries_sdps_message() {
        let e = env(
            r#"{"response_status":{"status_code":4000,"status":"failed","messages":[{"status_code":4001,"type":"failed","field":"subject","message":"Value is not valid"}]}}"#,
        );
        let Envelope::Failure {
            status_code, message, ..
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(status_code, 4001);
        assert_eq!(message, "Value is not valid (field: subject)");
    }

    #[test]
    fn array_failure_in_any_entry() {
        let e = env(
            r#"{"response_status":[{"status_code":2000,"status":"success"},{"status_code":4000,"status":"failed","messages":[{"status_code":"4015","type":"failed","message":"Rate limit exceeded"}]}]}"#,
        );
        assert!(
            matches!(&e, Envelope::Failure { status_code: 4015, message, statuses } if message == "Rate limit exceeded" && statuses.len() == 2),
            "{e:?}"
        );
    }

    #[test]
    fn failure_without_messages_uses_the_entry() {
        let e = env(r#"{"response_status":{"status_code":4007,"status":"failed"}}"#);
        assert!(
            matches!(&e, Envelope::Failure { status_code: 4007, message, .. } if message == "failed"),
            "{e:?}"
        );
        // A 2000 entry whose message carries a failure code is a failure.
        let e = env(
            r#"{"response_status":{"status_code":2000,"messages":[{"status_code":4022,"message":"Invalid API key"}]}}"#,
        );
        assert!(matches!(e, Envelope::Failure { status_code: 4022, .. }), "{e:?}");
    }

    #[test]
    fn garbage_is_never_success() {
        assert!(matches!(
            parse_envelope(b"<html>502</html>"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            parse_envelope(&[0xff, 0xfe, 0x00]),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(env("{}"), Envelope::Missing);
        assert_eq!(env("[]"), Envelope::Missing);
        assert_eq!(env("42"), Envelope::Missing);
        assert_eq!(env(r#"{"response_status":null}"#), Envelope::Missing);
        assert_eq!(env(r#"{"response_status":[]}"#), Envelope::Missing);
        assert_eq!(env(r#"{"response_status":[1,"x",null]}"#), Envelope::Missing);
        assert_eq!(env(r#"{"response_status":{"unrelated":true}}"#), Envelope::Missing);
        assert!(matches!(
            env(r#"{"response_status":{"status_code":"abc","status":"failed"}}"#),
            Envelope::Failure { status_code: 4000, .. }
        ));
    }
}
