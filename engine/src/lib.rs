//! Lethe's engine: everything with IO around the pure domain.
//!
//! - [`store`]: the event log (Postgres, SQLite).
//! - [`requests`]: runs commands against the log.
//! - [`http`] and [`cli`]: the two doors.
//! - [`config`], [`secrets`], [`telemetry`]: what they are configured with.
//! - [`sealing`], [`keys`], [`key_ring`]: crypto-shredding and the master keys under it.

pub mod audit;
pub mod cleaners;
pub mod cli;
pub mod config;
pub mod http;
pub mod kafka;
pub mod key_ring;
pub mod keys;
pub mod metrics;
pub mod read_models;
pub mod requests;
pub mod sealing;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod views;
pub mod workflow;
