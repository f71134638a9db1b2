//! Schema evolution: every released writer schema stays in `avro/`, is
//! embedded and registered, and resolves against the newest version, so a
//! record written by any earlier release still decodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use apache_avro::schema::{ResolvedSchema, SchemaKind};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::{from_avro_datum, to_avro_datum, Schema};
use schemas::*;

/// Every schema version ever released, with the fingerprint it was released
/// with. Records carry that fingerprint for as long as they sit in a topic,
/// a retry tier or a dead-letter payload, so a released schema's canonical
/// form must never change and its file must never go. Releasing a new
/// version adds a line here.
const RELEASED: &[(&str, usize, &str)] = &[
    ("webhook_received", 1, "b7e2cb0bdbc6964d"),
    ("webhook_received", 2, "e217db2c663653b6"),
    ("validated_job", 1, "259000cffcab1530"),
    ("gathered_context", 1, "9e22235b5abecfa0"),
    ("gathered_context", 2, "a060e44519d0b0e4"),
    ("synthesized_enhancement", 1, "d7e30bd200236ac0"),
    ("synthesized_enhancement", 2, "6174ba1aaf6a4ffb"),
    ("ticket_updated", 1, "547cc71ef852ef46"),
    ("ticket_updated", 2, "a2733f68f79c0466"),
    ("failure_envelope", 1, "519ec2c3bcfe951e"),
];

/// A `WebhookReceived` exactly as the release before schema v2 encoded it
/// (`Codec::builtin().encode` of [`v1_webhook`] at that commit): marker,
/// the v1 fingerprint, the v1 datum.
const V1_WEBHOOK_BYTES: &str = "c301b7e2cb0bdbc6964d4830313930663463322d376431652d376233612d39633535\
2d3366316532643463356236610c636f72722d370861636d6508313034321e72657175657374\
5f637265617465640e6d73675f325659f6f1bc8c80645c7b2272657175657374223a7b226964\
223a2231303432222c227375626a656374223a2256504e20646f776e227d7d";

fn v1_webhook() -> WebhookReceived {
    WebhookReceived {
        meta: JobMeta {
            job_id: "0190f4c2-7d1e-7b3a-9c55-3f1e2d4c5b6a".into(),
            correlation_id: "corr-7".into(),
            tenant_id: "acme".into(),
            ticket_id: "1042".into(),
            event: "request_created".into(),
            webhook_id: "msg_2VY".into(),
            received_at_ms: 1_718_000_000_123,
        },
        payload_json: r#"{"request":{"id":"1042","subject":"VPN down"}}"#.into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn parse(text: &str) -> Schema {
    Schema::parse_str(text).unwrap()
}

fn single_object(schema: &Schema, datum: &[u8]) -> Vec<u8> {
    let mut bytes = SINGLE_OBJECT_MARKER.to_vec();
    bytes.extend_from_slice(&fingerprint(schema));
    bytes.extend_from_slice(datum);
    bytes
}

fn field<'a>(value: &'a Value, name: &str) -> &'a Value {
    match value {
        Value::Record(fields) => {
            &fields
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no field {name}"))
                .1
        }
        other => panic!("not a record: {other:?}"),
    }
}

/// Decodes `bytes` with the builtin codec into the Rust type of `name`.
fn decode_as(name: &str, bytes: &[u8]) -> Result<(), CodecError> {
    let codec = Codec::builtin();
    macro_rules! try_types {
        ($($t:ty),+) => {
            $(if name == <$t>::NAME {
                return codec.decode::<$t>(bytes).map(|_| ());
            })+
        };
    }
    try_types!(
        WebhookReceived,
        ValidatedJob,
        GatheredContext,
        SynthesizedEnhancement,
        TicketUpdated,
        FailureEnvelope
    );
    panic!("{name} is in SCHEMA_FILES but not in this test's list of Rust types");
}

/// Every file under `avro/`, as `<dir>/<file>` (a file at the top is `/<file>`).
fn files_on_disk() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let dir = path.file_name().unwrap().to_string_lossy().into_owned();
        if !path.is_dir() {
            found.insert(format!("/{dir}"), std::fs::read_to_string(&path).unwrap_or_default());
            continue;
        }
        for file in std::fs::read_dir(&path).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            found.insert(format!("{dir}/{name}"), text);
        }
    }
    found
}

#[test]
fn every_schema_file_is_embedded_and_registered() {
    let embedded: BTreeMap<String, &str> = SCHEMA_FILES
        .iter()
        .flat_map(|r| {
            r.numbered()
                .map(move |(v, text)| (format!("{}/v{v}.avsc", r.dir), text))
        })
        .collect();
    let on_disk = files_on_disk();

    let not_embedded: Vec<_> = on_disk.keys().filter(|p| !embedded.contains_key(*p)).collect();
    assert!(
        not_embedded.is_empty(),
        "schemas/avro holds files the crate does not embed: {not_embedded:?}; \
         every schema is avro/<record>/v<N>.avsc and is listed in records! (src/records.rs)"
    );
    let missing: Vec<_> = embedded.keys().filter(|p| !on_disk.contains_key(*p)).collect();
    assert!(missing.is_empty(), "embedded versions without a file: {missing:?}");
    for (path, text) in &embedded {
        assert_eq!(
            on_disk[path], *text,
            "{path}: the embedded text is not the file's (listed under the wrong version number?)"
        );
    }

    let registered: HashMap<Fingerprint, &str> =
        Codec::builtin().fingerprints().map(|(fp, name)| (*fp, name)).collect();
    for record in SCHEMA_FILES {
        for (v, text) in record.numbered() {
            let fp = fingerprint(&parse(text));
            assert_eq!(
                registered.get(&fp).copied(),
                Some(record.name),
                "{}/v{v}.avsc is not registered as a {} schema",
                record.dir,
                record.name
            );
        }
    }
    assert_eq!(registered.len(), embedded.len(), "one fingerprint per schema file");
}

#[test]
fn released_schemas_are_never_changed_or_removed() {
    let current: BTreeMap<(String, usize), String> = SCHEMA_FILES
        .iter()
        .flat_map(|r| {
            r.numbered()
                .map(move |(v, text)| ((r.dir.to_string(), v), hex(&fingerprint(&parse(text)))))
        })
        .collect();
    for (dir, v, fp) in RELEASED {
        match current.get(&(dir.to_string(), *v)) {
            None => panic!("released schema {dir}/v{v}.avsc is gone: records written with it no longer decode"),
            Some(now) => assert_eq!(
                now, fp,
                "released schema {dir}/v{v}.avsc changed (fingerprint {now}, released as {fp}): \
                 records written with it no longer decode; put the change in a new version"
            ),
        }
    }
    let released: BTreeSet<(String, usize)> = RELEASED.iter().map(|(d, v, _)| (d.to_string(), *v)).collect();
    for ((dir, v), fp) in &current {
        assert!(
            released.contains(&(dir.clone(), *v)),
            "{dir}/v{v}.avsc is new: add (\"{dir}\", {v}, \"{fp}\") to RELEASED in tests/evolution.rs"
        );
    }
}

#[test]
fn each_version_is_its_record_and_the_newest_is_the_reader() {
    let codec = Codec::builtin();
    for record in SCHEMA_FILES {
        let mut previous = None;
        for (v, text) in record.numbered() {
            let schema = parse(text);
            let Schema::Record(r) = &schema else {
                panic!("{}/v{v}.avsc is not a record schema", record.dir)
            };
            assert_eq!(r.name.fullname(None), record.name, "{}/v{v}.avsc", record.dir);
            let fp = fingerprint(&schema);
            assert_ne!(
                Some(fp),
                previous,
                "{}/v{v}.avsc has the canonical form of v{}: a new version must change the schema",
                record.dir,
                v - 1
            );
            previous = Some(fp);
        }
        assert_eq!(record.current(), *record.versions.last().unwrap());
    }
    // Each Rust type's reader schema is its record's newest version.
    macro_rules! newest {
        ($($t:ty),+) => {$(
            let record = SCHEMA_FILES.iter().find(|r| r.name == <$t>::NAME).unwrap();
            assert_eq!(<$t>::SCHEMA, record.current());
            assert_eq!(<$t>::VERSIONS, record.versions);
            assert_eq!(codec.fingerprint_of::<$t>(), fingerprint(&parse(record.current())));
        )+};
    }
    newest!(
        WebhookReceived,
        ValidatedJob,
        GatheredContext,
        SynthesizedEnhancement,
        TicketUpdated,
        FailureEnvelope
    );
    assert_eq!(
        SCHEMA_FILES.len(),
        6,
        "a new record type: add it to the lists in this test"
    );
}

/// A datum of `schema`: every field set, unions on their first non-null
/// branch (or null with `nulls`), one element per array and map.
fn sample(schema: &Schema, names: &HashMap<String, Schema>, nulls: bool) -> Value {
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(true),
        Schema::Int => Value::Int(7),
        Schema::Long => Value::Long(1_718_000_000_123),
        Schema::Float => Value::Float(0.5),
        Schema::Double => Value::Double(0.25),
        Schema::Bytes => Value::Bytes(vec![0xC3, 0x01, 0xFF]),
        Schema::String => Value::String("sample".into()),
        Schema::Array(a) => Value::Array(vec![sample(&a.items, names, nulls)]),
        Schema::Map(m) => Value::Map(HashMap::from([("k".to_string(), sample(&m.types, names, nulls))])),
        Schema::Union(u) => {
            let variants = u.variants();
            let i = if nulls {
                variants.iter().position(|s| *s == Schema::Null).unwrap_or(0)
            } else {
                variants.iter().position(|s| *s != Schema::Null).unwrap_or(0)
            };
            Value::Union(i as u32, Box::new(sample(&variants[i], names, nulls)))
        }
        Schema::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), sample(&f.schema, names, nulls)))
                .collect(),
        ),
        Schema::Enum(e) => Value::Enum(0, e.symbols[0].clone()),
        Schema::Fixed(f) => Value::Fixed(f.size, vec![0; f.size]),
        Schema::Ref { name } => sample(&names[&name.fullname(None)], names, nulls),
        other => panic!("sample() does not know {:?} yet: extend it", SchemaKind::from(other)),
    }
}

#[test]
fn every_older_version_is_readable_with_the_newest() {
    for record in SCHEMA_FILES {
        let reader = parse(record.current());
        for (v, text) in record.numbered().take(record.versions.len() - 1) {
            let writer = parse(text);
            let what = format!("{}/v{v}.avsc read with v{}", record.dir, record.versions.len());
            // The Avro resolution rules: e.g. a field the writer lacks needs a default.
            if let Err(e) = SchemaCompatibility::can_read(&writer, &reader) {
                panic!("{what}: not backward compatible: {e}");
            }
            let names: HashMap<String, Schema> = ResolvedSchema::try_from(&writer)
                .unwrap()
                .get_names()
                .iter()
                .map(|(n, s)| (n.fullname(None), (*s).clone()))
                .collect();
            for nulls in [false, true] {
                let datum = to_avro_datum(&writer, sample(&writer, &names, nulls)).unwrap();
                let resolved = from_avro_datum(&writer, &mut &datum[..], Some(&reader));
                assert!(resolved.is_ok(), "{what}: {resolved:?}");
                // And the builtin codec turns the old bytes into today's Rust type.
                let bytes = single_object(&writer, &datum);
                if let Err(e) = decode_as(record.name, &bytes) {
                    panic!("{what} (nulls: {nulls}): {e}");
                }
            }
        }
    }
}

#[test]
fn webhook_written_by_the_v1_release_decodes_with_the_current_codec() {
    let codec = Codec::builtin();
    let v1 = parse(WebhookReceived::VERSIONS[0]);
    let v2 = parse(WebhookReceived::SCHEMA);
    let bytes = unhex(V1_WEBHOOK_BYTES);
    assert_eq!(bytes[2..10], fingerprint(&v1), "the old bytes carry v1's fingerprint");
    assert_ne!(codec.fingerprint_of::<WebhookReceived>(), fingerprint(&v1));

    // The same bytes as the v1 release wrote, built here from the v1 schema
    // file the way its codec did.
    let value = apache_avro::to_value(v1_webhook()).unwrap().resolve(&v1).unwrap();
    assert_eq!(single_object(&v1, &to_avro_datum(&v1, value).unwrap()), bytes);

    // Today's codec reads them into today's type.
    assert_eq!(codec.record_name(&bytes).unwrap(), WebhookReceived::NAME);
    let back: WebhookReceived = codec.decode(&bytes).unwrap();
    assert_eq!(back, v1_webhook());
    assert_eq!(back.meta.received_at_ms, 1_718_000_000_123);
    assert_eq!(back.payload_json, r#"{"request":{"id":"1042","subject":"VPN down"}}"#);

    // Resolved against v2, the field v1 did not have takes its default.
    let resolved = from_avro_datum(&v1, &mut &bytes[10..], Some(&v2)).unwrap();
    assert_eq!(
        field(&resolved, "webhook_timestamp"),
        &Value::Union(0, Box::new(Value::Null))
    );
    assert_eq!(
        field(field(&resolved, "meta"), "ticket_id"),
        &Value::String("1042".into())
    );

    // Re-encoded (a retry tier forwarding it), it is a v2 record with the default.
    let again = codec.encode(&back).unwrap();
    assert_eq!(again[2..10], fingerprint(&v2));
    let reader = apache_avro::GenericSingleObjectReader::new(v2.clone()).unwrap();
    let value = reader.read_value(&mut &again[..]).unwrap();
    assert_eq!(
        field(&value, "webhook_timestamp"),
        &Value::Union(0, Box::new(Value::Null))
    );
    assert_eq!(codec.decode::<WebhookReceived>(&again).unwrap(), v1_webhook());
}

#[test]
fn webhook_v2_with_the_new_field_set_decodes_into_todays_type() {
    // A later ingest that fills `webhook_timestamp`: today's type drops it.
    let v2 = parse(WebhookReceived::SCHEMA);
    let mut value = apache_avro::to_value(v1_webhook()).unwrap();
    if let Value::Record(fields) = &mut value {
        fields.push((
            "webhook_timestamp".into(),
            Value::Union(1, Box::new(Value::Long(1_718_000_000))),
        ));
    }
    let datum = to_avro_datum(&v2, value.resolve(&v2).unwrap()).unwrap();
    let bytes = single_object(&v2, &datum);
    assert_eq!(
        Codec::builtin().decode::<WebhookReceived>(&bytes).unwrap(),
        v1_webhook()
    );
}

#[test]
fn unknown_writer_fingerprint_is_still_a_clear_error() {
    let codec = Codec::builtin();
    // A v3 nobody registered (as a newer release would write it, read by this
    // one): the same typed, permanent error as any unknown fingerprint.
    let mut v3: serde_json::Value = serde_json::from_str(WebhookReceived::SCHEMA).unwrap();
    v3["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "source_ip", "type": ["null", "string"], "default": null}));
    let v3 = parse(&v3.to_string());
    let mut value = apache_avro::to_value(v1_webhook()).unwrap();
    if let Value::Record(fields) = &mut value {
        fields.push(("webhook_timestamp".into(), Value::Union(0, Box::new(Value::Null))));
        fields.push(("source_ip".into(), Value::Union(0, Box::new(Value::Null))));
    }
    let bytes = single_object(&v3, &to_avro_datum(&v3, value).unwrap());
    let fp = hex(&fingerprint(&v3));
    for err in [
        codec.decode::<WebhookReceived>(&bytes).unwrap_err(),
        codec.record_name(&bytes).unwrap_err(),
    ] {
        assert!(matches!(err, CodecError::UnknownFingerprint { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("unknown writer schema fingerprint {fp}: no schema in schemas/avro has it")
        );
    }
}
