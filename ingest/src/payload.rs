//! The webhook body: JSON syntax and the fields Ticketflow needs
//! (`request.id`, and `event`, defaulting to `request_created`).
//!
//! Pure (serde_json only, no `crate::` paths): the fuzz targets compile
//! this file as it is, without the HTTP server and Kafka client around it.

use serde_json::Value;

/// Longest accepted `request.id`.
pub const MAX_TICKET_ID: usize = 64;
/// Longest accepted `event`.
pub const MAX_EVENT: usize = 64;

/// Why a body is refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Not JSON (`400`).
    Malformed(String),
    /// A required field missing or of the wrong shape (`422`).
    Field(String),
}

/// What the record needs from a webhook body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookFields {
    /// `request.id`: 1-64 ASCII letters, digits, `-` or `_`.
    pub ticket_id: String,
    /// `event`: non-empty, at most 64 bytes.
    pub event: String,
}

/// Parses a webhook body.
pub fn parse_webhook(body: &[u8]) -> Result<WebhookFields, PayloadError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(format!("body is not valid JSON: {e}")))?;
    required_fields(&json)
}

/// Checks the required fields of a parsed body.
pub fn required_fields(body: &Value) -> Result<WebhookFields, PayloadError> {
    let field = |m: &str| PayloadError::Field(m.to_string());
    let obj = body
        .as_object()
        .ok_or_else(|| field("body must be a JSON object with a 'request' object"))?;
    let request = obj
        .get("request")
        .ok_or_else(|| field("missing required field: request"))?;
    let request = request
        .as_object()
        .ok_or_else(|| field("field 'request' must be an object"))?;
    let ticket_id = match request.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(field("missing required field: request.id")),
        Some(_) => return Err(field("field 'request.id' must be a string or a number")),
    };
    if ticket_id.len() > MAX_TICKET_ID
        || !ticket_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PayloadError::Field(format!(
            "field 'request.id' must be 1-{MAX_TICKET_ID} letters, digits, '-' or '_'"
        )));
    }
    let event = match obj.get("event") {
        None | Some(Value::Null) => "request_created".to_string(),
        Some(Value::String(e)) if !e.is_empty() && e.len() <= MAX_EVENT => e.clone(),
        Some(_) => return Err(field("field 'event' must be a non-empty string")),
    };
    Ok(WebhookFields { ticket_id, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_and_checked() {
        let ok = parse_webhook(br#"{"event":"request_updated","request":{"id":" 42 "}}"#).unwrap();
        assert_eq!(ok.ticket_id, "42");
        assert_eq!(ok.event, "request_updated");
        assert_eq!(
            parse_webhook(br#"{"request":{"id":7}}"#).unwrap().event,
            "request_created"
        );
        assert!(matches!(parse_webhook(b"{"), Err(PayloadError::Malformed(_))));
        for (body, want) in [
            (&br#"[]"#[..], "body must be"),
            (br#"{}"#, "request"),
            (br#"{"request":1}"#, "'request' must be an object"),
            (br#"{"request":{}}"#, "request.id"),
            (br#"{"request":{"id":"  "}}"#, "request.id"),
            (br#"{"request":{"id":true}}"#, "string or a number"),
            (br#"{"request":{"id":"a/b"}}"#, "letters, digits"),
            (br#"{"request":{"id":1.5}}"#, "letters, digits"),
            (br#"{"request":{"id":"1"},"event":""}"#, "event"),
        ] {
            match parse_webhook(body) {
                Err(PayloadError::Field(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
