//! Lethe's engine: everything with IO around the pure domain, in layers (see
//! `docs/ARCHITECTURE.md`, whose layer table `tests/architecture.rs` enforces). From the bottom:
//!
//! - [`config`]: `lethe.toml`, typed; data only.
//! - [`store`]: the event log and the keys (master key, data keys, sealing, blind indexes).
//! - [`telemetry`]: logs and metrics.
//! - [`subscriptions`]: checkpointed, leased, fenced consumers of the log.
//! - [`projections`]: the persisted views, one subscription.
//! - [`cleaners`]: the cleaner protocols, one module per kind.
//! - [`app`]: the application service, the one door for every command and query.
//! - [`workflow`]: the saga, timers and jobs, dispatch and limits.
//! - [`kafka`]: the relay of events to Kafka and the consumer of cleaners' results.
//! - [`http`]: the HTTP edge.
//! - [`root`]: the composition root that opens the database and wires everything.
//! - [`cli`]: the `lethe` command.

pub mod app;
pub mod cleaners;
pub mod cli;
pub mod config;
pub mod http;
pub mod kafka;
pub mod projections;
pub mod root;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod workflow;
