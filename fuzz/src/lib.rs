//! What the fuzz targets share: `ingest`'s pure parsers, compiled from
//! their own source files. `ingest` itself is not a dependency because it
//! links librdkafka (through `processors`); these two files use no
//! `crate::` paths, only `sinks`, `serde_json` and the HMAC crates, so the
//! code fuzzed here is the code `ingest` runs.

/// `ingest::payload`: the webhook body.
#[path = "../../ingest/src/payload.rs"]
pub mod payload;

/// `ingest::signature`: Standard Webhooks headers and signatures.
#[path = "../../ingest/src/signature.rs"]
pub mod signature;
