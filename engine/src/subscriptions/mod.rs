//! Checkpointed subscriptions: the one way anything downstream follows the log (the saga, the
//! projections, the Kafka relay).
//!
//! A subscription is a row of the `subscriptions` table: its checkpoint in the log and a lease.
//! The runner ([`SubscriptionRunner`]) reads the log from the checkpoint in batches and hands
//! each batch to a [`Projector`], which writes what the batch calls for and moves the
//! checkpoint in one transaction, so every event's effect happens exactly once. The runner
//! holds a lease on the subscription (renewed on every round); with several engine instances
//! only the lease holder processes, and when it dies another takes over once the lease runs
//! out. A deposed owner's commit is refused (fencing), so it cannot apply a batch twice: every
//! commit goes through the one fenced checkpoint update of its backend
//! ([`postgres::commit_checkpoint`], [`sqlite::commit_checkpoint`]), inside the transaction
//! that holds the subscriber's own writes.

pub mod postgres;
mod runner;
pub mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::store::{Checkpoint, StoreError};

pub use runner::{Projector, Sink, Subscriber, SubscriptionRunner, Writing};

/// The `subscriptions` table. A store whose tables a subscriber writes is one of these too:
/// the subscriber's writes and its checkpoint share a transaction, so a database.
#[async_trait]
pub trait SubscriptionStore: Send + Sync + fmt::Debug {
    /// Takes or renews the subscription's lease for `owner` and returns its checkpoint, or
    /// `None` while another owner's lease runs.
    async fn acquire_subscription(
        &self,
        name: &str,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, StoreError>;

    /// Gives the subscription up so another owner can take it at once.
    async fn release_subscription(&self, name: &str, owner: &str) -> Result<(), StoreError>;

    /// The subscription's checkpoint, if it ever ran.
    async fn subscription_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>, StoreError>;
}

/// A lease owner id unique to this process: `HOST:PID:NONCE` (`HOSTNAME`, default `lethe`).
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "lethe".to_owned());
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &nonce[nonce.len() - 8..]
    )
}

/// A lease's length as a time span (saturating: a lease too long for one never runs out).
fn lease_span(lease: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(lease).unwrap_or(chrono::TimeDelta::MAX)
}
