//! The codec against the Avro spec: marker, fingerprint, resolution, errors.

use std::collections::HashMap;

use apache_avro::Schema;
use schemas::*;

fn meta() -> JobMeta {
    JobMeta {
        job_id: "0b6f7a0e-1".into(),
        correlation_id: "c-1".into(),
        tenant_id: "acme".into(),
        ticket_id: "1042".into(),
        event: "request_created".into(),
        webhook_id: "msg_1".into(),
        received_at_ms: 1_700_000_000_000,
    }
}

fn webhook() -> WebhookReceived {
    WebhookReceived {
        meta: meta(),
        payload_json: r#"{"request":{"id":"1042"}}"#.into(),
    }
}

#[test]
fn encoded_record_is_single_object_with_the_schema_fingerprint() {
    let codec = Codec::builtin();
    let bytes = codec.encode(&webhook()).unwrap();
    assert_eq!(bytes[..2], SINGLE_OBJECT_MARKER);
    assert_eq!(bytes[2..10], codec.fingerprint_of::<WebhookReceived>());

    // apache-avro's own single-object reader, knowing only the schema file,
    // decodes what we wrote: any Avro implementation can.
    let schema = Schema::parse_str(WebhookReceived::SCHEMA).unwrap();
    let reader = apache_avro::GenericSingleObjectReader::new(schema).unwrap();
    let value = reader.read_value(&mut &bytes[..]).unwrap();
    let back: WebhookReceived = apache_avro::from_value(&value).unwrap();
    assert_eq!(back, webhook());
}

#[test]
fn every_record_type_round_trips() {
    let codec = Codec::builtin();
    let mut timings = HashMap::new();
    timings.insert("context".to_string(), 12_i64);
    let gathered = GatheredContext {
        meta: meta(),
        request: TicketFields {
            subject: Some("VPN down".into()),
            ..Default::default()
        },
        similar_tickets: vec![SimilarTicket {
            ticket_id: "9".into(),
            subject: Some("VPN".into()),
            summary: None,
            status: "success".into(),
            similarity: 0.5,
            resolution: Some("Restarted the VPN gateway".into()),
        }],
        kb_articles: vec![KbArticle {
            id: "1".into(),
            title: "Reset VPN".into(),
            url: None,
            snippet: Some("...".into()),
            source: "imported".into(),
        }],
        ips_found: vec!["10.0.0.1".into()],
        hostnames_found: vec!["vpn-gw.corp.example".into()],
        ip_references: vec![IpReference {
            ip: "10.0.0.1".into(),
            asset_name: "vpn-gw".into(),
            asset_type: None,
            owner: None,
            site: None,
            hostname: Some("vpn-gw.corp.example".into()),
            source: "inventory".into(),
        }],
        sources: vec![SourceOutcome {
            source: "servicedesk".into(),
            ok: false,
            duration_ms: 3,
            items: 0,
            error: Some("timeout".into()),
        }],
        counts: ContextCounts::default(),
        timings,
    };
    assert_eq!(
        codec
            .decode::<GatheredContext>(&codec.encode(&gathered).unwrap())
            .unwrap(),
        gathered
    );

    let envelope = FailureEnvelope {
        job_id: "j".into(),
        correlation_id: "c".into(),
        tenant_id: "t".into(),
        ticket_id: "1".into(),
        failed_stage: "update".into(),
        error: "SDP answered 401".into(),
        error_class: "permanent".into(),
        attempt: 1,
        original_topic: "ticketflow.synthesized".into(),
        original_partition: 2,
        original_offset: 77,
        failed_at_ms: 1,
        not_before_ms: 0,
        payload: vec![0xC3, 0x01, 0, 255, 7],
    };
    assert_eq!(
        codec
            .decode::<FailureEnvelope>(&codec.encode(&envelope).unwrap())
            .unwrap(),
        envelope
    );
}

#[test]
fn bad_bytes_give_typed_errors_never_panics() {
    let codec = Codec::builtin();
    let good = codec.encode(&webhook()).unwrap();

    assert!(matches!(
        codec.decode::<WebhookReceived>(b"{\"json\":1}"),
        Err(CodecError::BadMarker { .. })
    ));
    assert!(matches!(
        codec.decode::<WebhookReceived>(&good[..6]),
        Err(CodecError::Truncated { len: 6 })
    ));
    let mut unknown = good.clone();
    unknown[5] ^= 0xFF;
    let err = codec.decode::<WebhookReceived>(&unknown).unwrap_err();
    assert!(matches!(err, CodecError::UnknownFingerprint { .. }), "{err}");
    assert!(err.to_string().contains("unknown writer schema fingerprint"));
    assert!(matches!(
        codec.decode::<ValidatedJob>(&good),
        Err(CodecError::WrongRecordType { .. })
    ));
    assert!(matches!(
        codec.decode::<WebhookReceived>(&good[..good.len() - 3]),
        Err(CodecError::CorruptDatum { .. })
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        codec.decode::<WebhookReceived>(&trailing),
        Err(CodecError::CorruptDatum { .. })
    ));

    // Every truncation and many single-byte corruptions: errors, no panics.
    for len in 0..good.len() {
        let _ = codec.decode::<WebhookReceived>(&good[..len]);
    }
    for i in 10..good.len() {
        for b in [0x00, 0x7F, 0x80, 0xFF] {
            let mut bad = good.clone();
            bad[i] = b;
            let _ = codec.decode::<WebhookReceived>(&bad);
        }
    }
}

#[test]
fn older_writer_schema_resolves_against_current_reader() {
    // A writer that did not have `payload_json` yet can't be read (no default),
    // but one with an extra field can: the reader ignores it.
    let mut codec_v2 = Codec::with_builtin_schemas();
    let mut v2: serde_json::Value = serde_json::from_str(WebhookReceived::SCHEMA).unwrap();
    v2["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "source_ip", "type": "string", "default": ""}));
    let v2_text = v2.to_string();
    let v2_schema = Schema::parse_str(&v2_text).unwrap();
    let fp = codec_v2.register_writer(&v2_text).unwrap();

    let mut value = apache_avro::to_value(webhook()).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.push(("source_ip".into(), apache_avro::types::Value::String("10.1.1.1".into())));
    }
    let datum = apache_avro::to_avro_datum(&v2_schema, value.resolve(&v2_schema).unwrap()).unwrap();
    let mut bytes = SINGLE_OBJECT_MARKER.to_vec();
    bytes.extend_from_slice(&fp);
    bytes.extend_from_slice(&datum);
    assert_eq!(codec_v2.decode::<WebhookReceived>(&bytes).unwrap(), webhook());
    // The builtin codec does not know that writer schema.
    assert!(matches!(
        Codec::builtin().decode::<WebhookReceived>(&bytes),
        Err(CodecError::UnknownFingerprint { .. })
    ));
}
