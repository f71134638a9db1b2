//! The dataflow described as data, its configuration, Kafka clients, the
//! embedded broker, operator actions, and the wiring behind the
//! `ticketflow` binary.
//!
//! Layout:
//! - [`config`]: ARCHITECTURE §6 variables, defaults in one place.
//! - [`dataflow`]: topics, stages, retry tiers, groups (§2).
//! - [`kafka`]: client factory (no-loss producer) and topic creation.
//! - [`broker`]: the embedded tansu broker.
//! - [`ops`]: lag; [`replay`]: DLQ retry, replay, group offsets, partitions.
//! - [`app`]: starts and stops a running process.
//! - [`tenants`], [`import`] (knowledge base, asset inventory), [`demo`],
//!   [`telemetry`]: CLI support.
//!
//! `topology` wires; it is the only crate that knows every other one.

pub mod app;
pub mod broker;
pub mod config;
pub mod dataflow;
pub mod demo;
pub mod health;
pub mod import;
pub mod kafka;
pub mod lag;
pub mod ops;
pub mod replay;
pub mod telemetry;
pub mod tenants;
