use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use apache_avro::rabin::Rabin;
use apache_avro::{from_avro_datum, from_value, to_avro_datum, to_value, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The two bytes that open every single-object encoded record.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];

/// CRC-64-AVRO fingerprint of a schema's parsing canonical form, as the 8
/// little-endian bytes that follow the marker.
pub type Fingerprint = [u8; 8];

/// A Rust type with Avro schemas of its own in `schemas/avro/<record>/`.
pub trait Record: Serialize + DeserializeOwned {
    /// Full name of the Avro record (`io.ticketflow.WebhookReceived`).
    const NAME: &'static str;
    /// Every released schema's JSON text, oldest first (`v1.avsc`, ...).
    const VERSIONS: &'static [&'static str];
    /// The newest schema's JSON text: the reader schema for this type and
    /// the writer schema of everything this build encodes.
    const SCHEMA: &'static str = Self::VERSIONS[Self::VERSIONS.len() - 1];
}

/// Why bytes could not become a record (or the reverse). Every variant is
/// permanent: the same bytes will fail the same way on every retry.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not an Avro single-object record: expected marker C3 01, found {found}")]
    BadMarker { found: String },
    #[error("record is {len} bytes, shorter than the 10-byte single-object header")]
    Truncated { len: usize },
    #[error("unknown writer schema fingerprint {fingerprint}: no schema in schemas/avro has it")]
    UnknownFingerprint { fingerprint: String },
    #[error("record {expected} cannot be read from a {found} writer schema")]
    WrongRecordType { expected: &'static str, found: String },
    #[error("corrupt {record} datum: {reason}")]
    CorruptDatum { record: &'static str, reason: String },
    #[error("cannot encode {record}: {reason}")]
    Encode { record: &'static str, reason: String },
    #[error("invalid schema {name}: {reason}")]
    InvalidSchema { name: String, reason: String },
}

struct Known {
    schema: Schema,
    name: String,
}

/// Encodes and decodes [`Record`]s with single-object framing.
pub struct Codec {
    by_fingerprint: HashMap<Fingerprint, Arc<Known>>,
    by_name: HashMap<String, (Arc<Known>, Fingerprint)>,
}

impl Codec {
    /// The codec with every schema of `schemas/avro` registered: each
    /// record's newest version as its reader schema, every older version as
    /// a writer schema, so records written by earlier releases still decode.
    pub fn builtin() -> &'static Codec {
        static CODEC: OnceLock<Codec> = OnceLock::new();
        CODEC.get_or_init(Codec::with_builtin_schemas)
    }

    /// A new codec with every schema of `schemas/avro` registered, to which
    /// more writer schemas can be added.
    pub fn with_builtin_schemas() -> Codec {
        let mut codec = Codec {
            by_fingerprint: HashMap::new(),
            by_name: HashMap::new(),
        };
        for record in crate::records::SCHEMA_FILES {
            let (current, older) = record
                .versions
                .split_last()
                .expect("every record has at least one schema version");
            for text in older {
                codec
                    .register_writer(text)
                    .expect("schemas/avro holds valid schemas (checked by tests)");
            }
            codec
                .register_reader(current)
                .expect("schemas/avro holds valid schemas (checked by tests)");
        }
        codec
    }

    fn parse(text: &str) -> Result<(Known, Fingerprint), CodecError> {
        let schema = Schema::parse_str(text).map_err(|e| CodecError::InvalidSchema {
            name: "<unparsed>".into(),
            reason: e.to_string(),
        })?;
        let name = match &schema {
            Schema::Record(r) => r.name.fullname(None),
            other => {
                return Err(CodecError::InvalidSchema {
                    name: format!("{other:?}"),
                    reason: "top-level schema must be a record".into(),
                })
            }
        };
        let fp = fingerprint(&schema);
        Ok((Known { schema, name }, fp))
    }

    /// Registers a schema as the current reader (and writer) schema of its
    /// record name.
    pub fn register_reader(&mut self, text: &str) -> Result<Fingerprint, CodecError> {
        let (known, fp) = Self::parse(text)?;
        let known = Arc::new(known);
        self.by_fingerprint.insert(fp, known.clone());
        self.by_name.insert(known.name.clone(), (known, fp));
        Ok(fp)
    }

    /// Registers an older writer schema, so records written with it resolve
    /// against the current reader schema.
    pub fn register_writer(&mut self, text: &str) -> Result<Fingerprint, CodecError> {
        let (known, fp) = Self::parse(text)?;
        self.by_fingerprint.insert(fp, Arc::new(known));
        Ok(fp)
    }

    /// Fingerprint of the current schema of `R`.
    pub fn fingerprint_of<R: Record>(&self) -> Fingerprint {
        self.reader::<R>().1
    }

    /// Every registered writer fingerprint with the record name it belongs to.
    pub fn fingerprints(&self) -> impl Iterator<Item = (&Fingerprint, &str)> {
        self.by_fingerprint.iter().map(|(fp, k)| (fp, k.name.as_str()))
    }

    fn reader<R: Record>(&self) -> (&Known, Fingerprint) {
        let (known, fp) = self
            .by_name
            .get(R::NAME)
            .unwrap_or_else(|| panic!("{} has no registered schema", R::NAME));
        (known, *fp)
    }

    pub fn encode<R: Record>(&self, record: &R) -> Result<Vec<u8>, CodecError> {
        let (known, fp) = self.reader::<R>();
        let err = |e: apache_avro::Error| CodecError::Encode {
            record: R::NAME,
            reason: e.to_string(),
        };
        let value = to_value(record).map_err(err)?.resolve(&known.schema).map_err(err)?;
        let datum = to_avro_datum(&known.schema, value).map_err(err)?;
        let mut out = Vec::with_capacity(10 + datum.len());
        out.extend_from_slice(&SINGLE_OBJECT_MARKER);
        out.extend_from_slice(&fp);
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// The writer record name of encoded bytes, without decoding the datum.
    pub fn record_name<'a>(&'a self, bytes: &[u8]) -> Result<&'a str, CodecError> {
        Ok(&self.writer(bytes)?.0.name)
    }

    fn writer<'a, 'b>(&'a self, bytes: &'b [u8]) -> Result<(&'a Known, &'b [u8]), CodecError> {
        if bytes.len() < 2 || bytes[..2] != SINGLE_OBJECT_MARKER {
            return Err(CodecError::BadMarker {
                found: bytes
                    .iter()
                    .take(2)
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        if bytes.len() < 10 {
            return Err(CodecError::Truncated { len: bytes.len() });
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..10]);
        let known = self
            .by_fingerprint
            .get(&fp)
            .ok_or_else(|| CodecError::UnknownFingerprint { fingerprint: hex(&fp) })?;
        Ok((known, &bytes[10..]))
    }

    pub fn decode<R: Record>(&self, bytes: &[u8]) -> Result<R, CodecError> {
        let (writer, mut datum) = self.writer(bytes)?;
        if writer.name != R::NAME {
            return Err(CodecError::WrongRecordType {
                expected: R::NAME,
                found: writer.name.clone(),
            });
        }
        let (reader, _) = self.reader::<R>();
        let corrupt = |e: apache_avro::Error| CodecError::CorruptDatum {
            record: R::NAME,
            reason: e.to_string(),
        };
        let value = from_avro_datum(&writer.schema, &mut datum, Some(&reader.schema)).map_err(corrupt)?;
        if !datum.is_empty() {
            return Err(CodecError::CorruptDatum {
                record: R::NAME,
                reason: format!("{} trailing bytes after the datum", datum.len()),
            });
        }
        from_value(&value).map_err(corrupt)
    }
}

/// CRC-64-AVRO fingerprint of a schema, in single-object byte order.
pub fn fingerprint(schema: &Schema) -> Fingerprint {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[..8]);
    fp
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
