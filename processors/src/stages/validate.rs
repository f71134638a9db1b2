//! validate: deep payload validation against the tenant's config and
//! de-duplication of events. Events that need no enhancement end here as
//! history `skipped`, with the reason (so do every record of a suspended
//! tenant: `tenant suspended: <reason>`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use schemas::{TicketFields, ValidatedJob, WebhookReceived};
use serde_json::Value;
use sinks::now_ms;

use super::{decode, elapsed_ms, encode, skip, store_failure, suspension, tenant, Services};
use crate::runtime::{Stage, StageFailure, StageInput, StageOutput};

/// Ticket statuses that need no enhancement.
const CLOSED_STATUSES: &[&str] = &["closed", "resolved", "cancelled", "canceled"];
const MAX_SUBJECT: usize = 1_000;
const MAX_DESCRIPTION: usize = 200_000;

pub struct ValidateStage {
    services: Arc<Services>,
}

impl ValidateStage {
    pub fn new(services: Arc<Services>) -> Self {
        ValidateStage { services }
    }
}

/// A string field of SDP's shapes: a plain string or `{"name": ...}`.
fn text_field(request: &Value, name: &str) -> Result<Option<String>, String> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Object(o)) => match o
            .get("name")
            .or_else(|| o.get("display_value"))
            .or_else(|| o.get("value"))
        {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(format!("request.{name}.name must be a string")),
        },
        Some(_) => Err(format!("request.{name} must be a string or an object with a name")),
    }
}

/// Checks the webhook body deeply; returns the ticket fields.
pub fn validate_payload(payload: &str) -> Result<TicketFields, String> {
    let body: Value = serde_json::from_str(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let request = body
        .get("request")
        .filter(|r| r.is_object())
        .ok_or("request must be an object")?;
    let requester = request.get("requester");
    if let Some(r) = requester {
        if !(r.is_object() || r.is_null()) {
            return Err("request.requester must be an object".into());
        }
    }
    let requester_field = |k: &str| -> Result<Option<String>, String> {
        match requester.and_then(|r| r.get(k)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("request.requester.{k} must be a string")),
        }
    };
    let fields = TicketFields {
        subject: text_field(request, "subject")?,
        description: text_field(request, "description")?,
        requester_name: requester_field("name")?,
        requester_email: requester_field("email").and_then(|e| {
            if e.is_some() {
                Ok(e)
            } else {
                requester_field("email_id")
            }
        })?,
        priority: text_field(request, "priority")?,
        category: text_field(request, "category")?,
        site: text_field(request, "site")?,
        created_time: text_field(request, "created_time")?,
        status: text_field(request, "status")?,
    };
    if fields.subject.as_ref().is_some_and(|s| s.len() > MAX_SUBJECT) {
        return Err(format!("request.subject is longer than {MAX_SUBJECT} bytes"));
    }
    if fields.description.as_ref().is_some_and(|s| s.len() > MAX_DESCRIPTION) {
        return Err(format!("request.description is longer than {MAX_DESCRIPTION} bytes"));
    }
    if let Some(email) = &fields.requester_email {
        if !email.contains('@') {
            return Err(format!("request.requester.email '{email}' is not an email address"));
        }
    }
    Ok(fields)
}

#[async_trait]
impl Stage for ValidateStage {
    async fn handle(&self, input: StageInput<'_>) -> Result<StageOutput, StageFailure> {
        let started = Instant::now();
        let webhook: WebhookReceived = decode(input.value)?;
        let meta = webhook.meta;
        let tenant = tenant(&self.services, &meta.tenant_id).await?;
        let fields = validate_payload(&webhook.payload_json);
        if let Some(reason) = suspension(&tenant) {
            // Even an invalid payload: nothing of a suspended tenant's is worked on.
            let subject = fields.ok().and_then(|f| f.subject);
            return skip(&self.services, &meta, subject, reason).await;
        }
        let fields = fields.map_err(|e| StageFailure::permanent(format!("invalid webhook payload: {e}")))?;

        let skip_reason = if !tenant.enabled_events.contains(&meta.event) {
            Some(format!(
                "event '{}' is not enabled for tenant '{}' (enabled: {})",
                meta.event,
                meta.tenant_id,
                tenant.enabled_events.join(", ")
            ))
        } else if let Some(status) = fields
            .status
            .as_deref()
            .filter(|s| CLOSED_STATUSES.contains(&s.to_lowercase().as_str()))
        {
            Some(format!("ticket is {status}; closed tickets are not enhanced"))
        } else if meta.event == "request_created" && input.headers.replayed_from.is_none() {
            let store = self.services.tenants.store();
            crate::trace::store_call(
                "claim_event",
                store.claim_event(&meta.tenant_id, &meta.ticket_id, &meta.event, &meta.job_id),
            )
            .await
            .map_err(store_failure)?
            .map(|first| {
                format!(
                    "duplicate request_created for ticket {}: already handled by job {first}",
                    meta.ticket_id
                )
            })
        } else {
            None
        };
        if let Some(reason) = skip_reason {
            return skip(&self.services, &meta, fields.subject, reason).await;
        }
        let mut timings = HashMap::new();
        timings.insert("validate".to_string(), elapsed_ms(started));
        timings.insert("queue_to_validate".to_string(), (now_ms() - meta.received_at_ms).max(0));
        Ok(StageOutput::Forward(encode(&ValidatedJob {
            meta,
            request: fields,
            validated_at_ms: now_ms(),
            timings,
        })?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_errors_name_the_field() {
        assert!(validate_payload("[]")
            .unwrap_err()
            .contains("request must be an object"));
        assert!(
            validate_payload(r#"{"request": {"id": "1", "subject": 5.5e0, "priority": [1]}}"#)
                .unwrap_err()
                .contains("request.priority")
        );
        assert!(validate_payload(r#"{"request": {"id": "1", "requester": "bob"}}"#)
            .unwrap_err()
            .contains("requester"));
        assert!(
            validate_payload(r#"{"request": {"id": "1", "requester": {"email": "nope"}}}"#)
                .unwrap_err()
                .contains("not an email")
        );
        let f = validate_payload(r#"{"request": {"id": "1", "subject": "VPN", "priority": {"name": "High"}, "requester": {"name": "Ann", "email": "a@b.c"}}}"#).unwrap();
        assert_eq!(f.priority.as_deref(), Some("High"));
        assert_eq!(f.requester_email.as_deref(), Some("a@b.c"));
    }
}
