//! Ticketflow's wire records: one Avro schema per record type (`avro/*.avsc`),
//! the Rust types that mirror them, and the codec that frames them.
//!
//! Framing is Avro single-object encoding: `C3 01`, the 8-byte little-endian
//! CRC-64-AVRO (Rabin) fingerprint of the writer schema's canonical form, then
//! the datum. A reader finds the writer schema by fingerprint and resolves it
//! against its own reader schema, so schemas can evolve: add an older writer
//! schema with [`Codec::register_writer`] and records written with it still
//! decode.
//!
//! This crate owns the record shapes and nothing else: it knows no Kafka, no
//! HTTP and no storage.

mod codec;
mod records;

pub use codec::{Codec, CodecError, Fingerprint, Record, SINGLE_OBJECT_MARKER};
pub use records::*;
