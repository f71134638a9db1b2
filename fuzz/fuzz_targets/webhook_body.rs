//! The webhook JSON path: body bytes -> required fields -> the
//! `WebhookReceived` record, which must encode and decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::{Codec, JobMeta, WebhookReceived};
use ticketflow_fuzz::payload::{parse_webhook, MAX_TICKET_ID};

fuzz_target!(|data: &[u8]| {
    let Ok(fields) = parse_webhook(data) else {
        return;
    };
    assert!(!fields.ticket_id.is_empty() && fields.ticket_id.len() <= MAX_TICKET_ID);
    assert!(fields
        .ticket_id
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    assert!(!fields.event.is_empty());
    let record = WebhookReceived {
        meta: JobMeta {
            job_id: "job".into(),
            correlation_id: "corr".into(),
            tenant_id: "acme".into(),
            ticket_id: fields.ticket_id,
            event: fields.event,
            webhook_id: "msg".into(),
            received_at_ms: 1,
        },
        payload_json: String::from_utf8_lossy(data).into_owned(),
        ..webhook_defaults()
    };
    let codec = Codec::builtin();
    let bytes = codec.encode(&record).expect("an accepted webhook encodes");
    let back: WebhookReceived = codec.decode(&bytes).expect("and decodes");
    assert_eq!(back, record);
});

/// Fields of `WebhookReceived` this target does not set (newer schema
/// versions add optional ones).
fn webhook_defaults() -> WebhookReceived {
    serde_json::from_value(serde_json::json!({
        "meta": {"job_id": "", "correlation_id": "", "tenant_id": "", "ticket_id": "",
                 "event": "", "webhook_id": "", "received_at_ms": 0},
        "payload_json": ""
    }))
    .expect("WebhookReceived from its required fields")
}
