//! The stage runtime and the five stages of the enhancement dataflow:
//! validate → context → synthesize → update → record.
//!
//! Layout:
//! - [`runtime`]: consumes a stage's input and retry topics as one consumer
//!   group, runs records with different keys concurrently and records with
//!   the same key (`tenant:ticket`) in order, commits offsets only up to the
//!   first unfinished record, routes failures to retry tiers and the
//!   dead-letter topic, and drains on rebalance and shutdown.
//! - [`headers`]: the record headers of ARCHITECTURE §3.
//! - [`trace`]: OpenTelemetry spans and `traceparent` propagation across
//!   Kafka hops (ARCHITECTURE §8).
//! - [`stages`]: the stages themselves, plain async functions over typed
//!   records behind the [`Stage`] trait, testable without a broker.
//!
//! This crate never imports `ingest`; it is handed its Kafka clients and
//! topic names by `topology`.

pub mod headers;
pub mod producer;
pub mod runtime;
pub mod stages;
pub mod trace;

pub use runtime::{run_stage, InputKind, InputTopic, Stage, StageFailure, StageInput, StageOutput, StageWiring};
