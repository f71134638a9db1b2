//! Ticketflow's wire records: the Avro schemas of each record type, every
//! released version kept (`avro/<record>/v<N>.avsc`, the highest is current),
//! the Rust types that mirror the current ones, and the codec that frames
//! them.
//!
//! Framing is Avro single-object encoding: `C3 01`, the 8-byte little-endian
//! CRC-64-AVRO (Rabin) fingerprint of the writer schema's canonical form, then
//! the datum. A reader finds the writer schema by fingerprint and resolves it
//! against its own reader schema, so schemas can evolve. [`Codec::builtin`]
//! registers every released version: the newest as the reader schema, the
//! older ones as writer schemas, so records written by an earlier release
//! still decode. A change to a record is a new file `v<N+1>.avsc` (never an
//! edit of a released one) that the newest can read every older version
//! with: new fields need defaults (`tests/evolution.rs` checks).
//!
//! This crate owns the record shapes and nothing else: it knows no Kafka, no
//! HTTP and no storage.

mod codec;
mod records;

pub use codec::{fingerprint, Codec, CodecError, Fingerprint, Record, SINGLE_OBJECT_MARKER};
pub use records::*;
