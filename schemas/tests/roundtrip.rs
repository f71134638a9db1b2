//! Property: for every record type, Avro single-object encode -> decode
//! gives back the same value, whatever the field values (any Unicode text,
//! empty and long strings, extreme integers, empty and full collections,
//! every optional field absent or present).
//!
//! The strategies build the Rust structs with struct literals, so a field
//! added to a record does not compile here until it is generated too.

use std::collections::HashMap;

use proptest::collection::{hash_map, vec};
use proptest::option;
use proptest::prelude::*;
use schemas::{
    Codec, ContextCounts, FailureEnvelope, GatheredContext, IpReference, JobMeta, KbArticle, Record, SimilarTicket,
    SourceOutcome, SynthesizedEnhancement, TicketFields, TicketUpdated, ValidatedJob, WebhookReceived,
};

/// Any text, including the empty string, control characters and astral
/// planes; short enough to keep a case fast.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>().prop_map(|s| s.chars().take(64).collect()),
        "[a-z0-9_-]{1,16}",
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

/// Finite doubles (NaN is not equal to itself, so it cannot round-trip
/// under `PartialEq`; the codec's handling of it is fuzzed instead).
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
    ]
}

fn timings() -> impl Strategy<Value = HashMap<String, i64>> {
    hash_map(text(), any::<i64>(), 0..4)
}

fn meta() -> impl Strategy<Value = JobMeta> {
    (text(), text(), text(), text(), text(), text(), any::<i64>()).prop_map(
        |(job_id, correlation_id, tenant_id, ticket_id, event, webhook_id, received_at_ms)| JobMeta {
            job_id,
            correlation_id,
            tenant_id,
            ticket_id,
            event,
            webhook_id,
            received_at_ms,
        },
    )
}

fn ticket() -> impl Strategy<Value = TicketFields> {
    (
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(
                subject,
                description,
                requester_name,
                requester_email,
                priority,
                category,
                site,
                created_time,
                status,
            )| {
                TicketFields {
                    subject,
                    description,
                    requester_name,
                    requester_email,
                    priority,
                    category,
                    site,
                    created_time,
                    status,
                }
            },
        )
}

fn counts() -> impl Strategy<Value = ContextCounts> {
    (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()).prop_map(
        |(similar_tickets, kb_articles, ip_references, nodes_success, nodes_failed)| ContextCounts {
            similar_tickets,
            kb_articles,
            ip_references,
            nodes_success,
            nodes_failed,
        },
    )
}

fn similar() -> impl Strategy<Value = SimilarTicket> {
    (text(), opt_text(), opt_text(), text(), finite(), opt_text()).prop_map(
        |(ticket_id, subject, summary, status, similarity, resolution)| SimilarTicket {
            ticket_id,
            subject,
            summary,
            status,
            similarity,
            resolution,
        },
    )
}

fn article() -> impl Strategy<Value = KbArticle> {
    (text(), text(), opt_text(), opt_text(), text()).prop_map(|(id, title, url, snippet, source)| KbArticle {
        id,
        title,
        url,
        snippet,
        source,
    })
}

fn ip_reference() -> impl Strategy<Value = IpReference> {
    (text(), text(), opt_text(), opt_text(), opt_text(), opt_text(), text()).prop_map(
        |(ip, asset_name, asset_type, owner, site, hostname, source)| IpReference {
            ip,
            asset_name,
            asset_type,
            owner,
            site,
            hostname,
            source,
        },
    )
}

fn outcome() -> impl Strategy<Value = SourceOutcome> {
    (text(), any::<bool>(), any::<i64>(), any::<i32>(), opt_text()).prop_map(
        |(source, ok, duration_ms, items, error)| SourceOutcome {
            source,
            ok,
            duration_ms,
            items,
            error,
        },
    )
}

fn webhook_received() -> impl Strategy<Value = WebhookReceived> {
    (meta(), text()).prop_map(|(meta, payload_json)| WebhookReceived { meta, payload_json })
}

fn validated_job() -> impl Strategy<Value = ValidatedJob> {
    (meta(), ticket(), any::<i64>(), timings()).prop_map(|(meta, request, validated_at_ms, timings)| ValidatedJob {
        meta,
        request,
        validated_at_ms,
        timings,
    })
}

fn gathered_context() -> impl Strategy<Value = GatheredContext> {
    (
        (meta(), ticket()),
        vec(similar(), 0..3),
        vec(article(), 0..3),
        vec(text(), 0..3),
        vec(text(), 0..3),
        vec(ip_reference(), 0..3),
        vec(outcome(), 0..3),
        counts(),
        timings(),
    )
        .prop_map(
            |(
                (meta, request),
                similar_tickets,
                kb_articles,
                ips_found,
                hostnames_found,
                ip_references,
                sources,
                counts,
                timings,
            )| GatheredContext {
                meta,
                request,
                similar_tickets,
                kb_articles,
                ips_found,
                hostnames_found,
                ip_references,
                sources,
                counts,
                timings,
            },
        )
}

/// What synthesize adds to a job: (note text, method, fallback reason,
/// model, prompt version, tokens in, tokens out, cost).
type Synthesis = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
);

fn synthesis() -> impl Strategy<Value = Synthesis> {
    (
        text(),
        text(),
        opt_text(),
        opt_text(),
        opt_text(),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(finite()),
    )
}

fn synthesized_enhancement() -> impl Strategy<Value = SynthesizedEnhancement> {
    (meta(), ticket(), synthesis(), counts(), timings()).prop_map(
        |(
            meta,
            request,
            (note_text, method, fallback_reason, model, prompt_version, tokens_in, tokens_out, cost_usd),
            counts,
            timings,
        )| SynthesizedEnhancement {
            meta,
            request,
            note_text,
            method,
            fallback_reason,
            model,
            prompt_version,
            tokens_in,
            tokens_out,
            cost_usd,
            counts,
            timings,
        },
    )
}

fn ticket_updated() -> impl Strategy<Value = TicketUpdated> {
    (
        meta(),
        ticket(),
        synthesis(),
        opt_text(),
        any::<bool>(),
        counts(),
        timings(),
    )
        .prop_map(
            |(
                meta,
                request,
                (note_text, method, fallback_reason, model, prompt_version, tokens_in, tokens_out, cost_usd),
                note_id,
                already_posted,
                counts,
                timings,
            )| TicketUpdated {
                meta,
                request,
                note_text,
                note_id,
                already_posted,
                method,
                fallback_reason,
                model,
                prompt_version,
                tokens_in,
                tokens_out,
                cost_usd,
                counts,
                timings,
            },
        )
}

fn failure_envelope() -> impl Strategy<Value = FailureEnvelope> {
    (
        (text(), text(), text(), text(), text(), text(), text()),
        (
            any::<i32>(),
            text(),
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
        ),
        vec(any::<u8>(), 0..256),
    )
        .prop_map(
            |(
                (job_id, correlation_id, tenant_id, ticket_id, failed_stage, error, error_class),
                (attempt, original_topic, original_partition, original_offset, failed_at_ms, not_before_ms),
                payload,
            )| FailureEnvelope {
                job_id,
                correlation_id,
                tenant_id,
                ticket_id,
                failed_stage,
                error,
                error_class,
                attempt,
                original_topic,
                original_partition,
                original_offset,
                failed_at_ms,
                not_before_ms,
                payload,
            },
        )
}

/// Encodes with the builtin codec (current writer schema) and decodes.
fn roundtrip<R: Record + PartialEq + std::fmt::Debug>(record: &R) -> Result<(), TestCaseError> {
    let codec = Codec::builtin();
    let bytes = codec
        .encode(record)
        .map_err(|e| TestCaseError::fail(format!("{} does not encode: {e}", R::NAME)))?;
    prop_assert_eq!(codec.record_name(&bytes).ok(), Some(R::NAME));
    let back: R = codec
        .decode(&bytes)
        .map_err(|e| TestCaseError::fail(format!("{} does not decode: {e}", R::NAME)))?;
    prop_assert_eq!(&back, record);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn webhook_received_round_trips(r in webhook_received()) {
        roundtrip(&r)?;
    }

    #[test]
    fn validated_job_round_trips(r in validated_job()) {
        roundtrip(&r)?;
    }

    #[test]
    fn gathered_context_round_trips(r in gathered_context()) {
        roundtrip(&r)?;
    }

    #[test]
    fn synthesized_enhancement_round_trips(r in synthesized_enhancement()) {
        roundtrip(&r)?;
    }

    #[test]
    fn ticket_updated_round_trips(r in ticket_updated()) {
        roundtrip(&r)?;
    }

    #[test]
    fn failure_envelope_round_trips(r in failure_envelope()) {
        roundtrip(&r)?;
    }
}

/// Every record type has a property above: a new record type fails here
/// until it gets one.
#[test]
fn every_record_type_is_covered() {
    let covered = [
        WebhookReceived::NAME,
        ValidatedJob::NAME,
        GatheredContext::NAME,
        SynthesizedEnhancement::NAME,
        TicketUpdated::NAME,
        FailureEnvelope::NAME,
    ];
    let mut listed: Vec<&str> = schemas::SCHEMA_FILES.iter().map(|s| s.name).collect();
    listed.sort_unstable();
    let mut covered = covered.to_vec();
    covered.sort_unstable();
    assert_eq!(listed, covered);
}
