//! OpenTelemetry traces, written with `tracing` (ARCHITECTURE §8): one
//! trace per webhook across every Kafka hop.
//!
//! Spans are ordinary `tracing` spans; `topology` installs the
//! `tracing-opentelemetry` layer that turns them into OpenTelemetry spans
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The context crosses Kafka in
//! the W3C `traceparent` record header:
//!
//! - ingest's server span (`POST /webhooks/servicedesk/{tenant_id}`) takes
//!   the webhook request's own `traceparent` as its parent, if any;
//! - every record is written under a producer span (`send <topic>`, made by
//!   [`crate::producer::DurableProducer::send`]) and carries *that* span's
//!   context as its `traceparent`;
//! - every record is processed under a consumer span (`process <topic>`, the
//!   runtime's `job` span) whose parent is the record's `traceparent`. A
//!   retry-tier or dead-letter record is written the same way, so each
//!   attempt is one more `process` span in the same trace.
//!
//! Without the layer (no endpoint) every helper here is a no-op and records
//! keep the trace id they came with (a fresh span id per hop).
//!
//! Spans that exist only for traces (producer, SDP, LLM and store client
//! spans) use the target [`TARGET`], which log filters leave out.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use opentelemetry::trace::{SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of spans made only for traces (sinks use the same
/// literal): the JSON logs do not carry them, the trace layer does.
pub const TARGET: &str = "trace_spans";

static DB_SYSTEM: OnceLock<&'static str> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Called by `topology` once the trace layer is installed: until then the
/// helpers here skip the work of filling in attributes nobody exports.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether `span` goes to an exporter (traces on, span enabled).
fn exported(span: &Span) -> bool {
    ENABLED.load(Ordering::Relaxed) && !span.is_disabled()
}

/// Sets the `db.system` of store spans (`sqlite` for the embedded store,
/// `cassandra` for ScyllaDB); once per process.
pub fn set_db_system(system: &'static str) {
    let _ = DB_SYSTEM.set(system);
}

fn db_system() -> &'static str {
    DB_SYSTEM.get().copied().unwrap_or("sqlite")
}

/// Reads a W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex
/// flags>`); `None` when it is not one (or its ids are all zeros).
pub fn parse_traceparent(traceparent: &str) -> Option<SpanContext> {
    let tp = traceparent.trim();
    let mut parts = tp.split('-');
    let (version, trace_id, span_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    // Version 00 has exactly four fields; a later version may add more.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & 0x01),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// The W3C `traceparent` of a span context.
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & 0x01
    )
}

/// Makes `span` a child of the remote span in `traceparent` (a webhook
/// request's header, a record's header). Call before the span is entered.
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>) {
    if !exported(span) {
        return;
    }
    if let Some(sc) = traceparent.and_then(parse_traceparent) {
        let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    }
}

/// The `traceparent` that makes the next hop a child of `span`; `None`
/// when traces are off (or the span is disabled).
pub fn traceparent_of(span: &Span) -> Option<String> {
    if !exported(span) {
        return None;
    }
    let cx = span.context();
    let span_ref = cx.span();
    let sc = span_ref.span_context();
    sc.is_valid().then(|| format_traceparent(sc))
}

/// `headers` with their `traceparent` replaced by (or, missing, set to)
/// `traceparent`; every other header is kept as it was.
pub fn with_traceparent(headers: OwnedHeaders, traceparent: &str) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.count() + 1);
    let mut set = false;
    for h in headers.iter() {
        if h.key == "traceparent" {
            if !set {
                out = out.insert(Header {
                    key: "traceparent",
                    value: Some(traceparent),
                });
                set = true;
            }
        } else {
            out = out.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    if !set {
        out = out.insert(Header {
            key: "traceparent",
            value: Some(traceparent),
        });
    }
    out
}

/// Sets an OpenTelemetry attribute on `span` (not a `tracing` field: the
/// JSON logs stay as they are).
pub fn attr(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if exported(span) {
        span.set_attribute(key, value);
    }
}

/// Marks `span` failed: status error with `message`, and `error.type`.
pub fn set_error(span: &Span, error_type: &str, message: impl Into<String>) {
    if !exported(span) {
        return;
    }
    span.set_attribute("error.type", error_type.to_string());
    span.set_status(Status::error(message.into()));
}

/// The messaging attributes (OpenTelemetry semantic conventions) of a Kafka
/// `send` or `process` span.
pub fn messaging(span: &Span, operation: &'static str, topic: &str, key: &str) {
    if !exported(span) {
        return;
    }
    attr(span, "messaging.system", "kafka");
    attr(span, "messaging.operation.type", operation);
    attr(span, "messaging.operation.name", operation);
    attr(span, "messaging.destination.name", topic.to_string());
    attr(span, "messaging.kafka.message.key", key.to_string());
}

/// Where the record is (consumer) or was written (producer).
pub fn kafka_position(span: &Span, partition: i32, offset: i64) {
    if !exported(span) {
        return;
    }
    attr(span, "messaging.destination.partition.id", partition.to_string());
    attr(span, "messaging.kafka.offset", offset);
}

/// The identity of the job a record belongs to, read from its headers.
pub fn job_attributes(span: &Span, headers: &OwnedHeaders) {
    if !exported(span) {
        return;
    }
    for name in ["tenant_id", "job_id", "correlation_id"] {
        if let Some(v) = crate::headers::get_owned(Some(headers), name) {
            span.set_attribute(name, v.to_string());
        }
    }
}

/// The producer span of one record written to `topic`; the record's
/// `traceparent` is this span's context.
pub fn send_span(topic: &str, key: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "send",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
    );
    if exported(&span) {
        messaging(&span, "send", topic, key);
        if let Some((_, ticket)) = key.split_once(':') {
            attr(&span, "ticket_id", ticket.to_string());
        }
    }
    span
}

/// A client span around one store call (`db.system`, `db.operation.name`).
pub fn store_span(operation: &'static str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "store",
        otel.name = operation,
        otel.kind = "client",
        db.system = db_system(),
        db.system.name = db_system(),
        db.operation.name = operation,
    )
}

/// Runs one store call under a [`store_span`], marking it failed on error.
pub async fn store_call<T, E: std::fmt::Display>(
    operation: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = store_span(operation);
    let result = call.instrument(span.clone()).await;
    if let Err(e) = &result {
        set_error(&span, "store_error", e.to_string());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).unwrap();
        assert_eq!(format!("{}", sc.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(format_traceparent(&sc), tp);
        let unsampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.is_sampled());
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A later version may carry more fields.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
    }

    #[test]
    fn traceparent_header_is_replaced_and_others_kept() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "job_id",
                value: Some("j"),
            })
            .insert(Header {
                key: "traceparent",
                value: Some("old"),
            })
            .insert(Header {
                key: "attempt",
                value: Some("2"),
            });
        let out = with_traceparent(headers, "new");
        assert_eq!(crate::headers::get_owned(Some(&out), "traceparent"), Some("new"));
        assert_eq!(crate::headers::get_owned(Some(&out), "job_id"), Some("j"));
        assert_eq!(crate::headers::get_owned(Some(&out), "attempt"), Some("2"));
        assert_eq!(out.count(), 3);
        let added = with_traceparent(OwnedHeaders::new(), "tp");
        assert_eq!(crate::headers::get_owned(Some(&added), "traceparent"), Some("tp"));
    }

    #[test]
    fn without_the_trace_layer_everything_is_a_no_op() {
        let span = tracing::info_span!("x");
        set_remote_parent(&span, Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(traceparent_of(&send_span("t", "a:1")), None);
    }
}
