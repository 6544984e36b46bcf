//! The event log: one [`EventStore`] trait and two implementations on sqlx, Postgres for
//! production and SQLite as the embedded default. Both keep the same schema (see
//! `migrations/`), the same per-stream hash chain and the same idempotency rules; the
//! conformance suite in `engine/tests/store_conformance/` runs against both.

mod group;
mod hash;
pub mod key_ring;
pub mod keys;
pub mod master_key;
mod migration_renumbering;
mod open;
mod postgres;
mod reachability;
pub mod receipt_keys;
pub mod sealing;
mod sqlite;
pub mod suppression;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::event::SCHEMA_VERSION;
use lethe_domain::{Event, RequestId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use hash::chain_hash;
pub use hash::{verify_chain, ChainBreak, GENESIS_HASH};
pub use open::{Backend, OpenError};
pub use postgres::{PostgresStore, TOOL_ACQUIRE_TIMEOUT};
pub use sqlite::SqliteStore;

/// Who asked for a change and why it happened, recorded with every event of one append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The idempotency key of the command: a retried command with the same id appends nothing
    /// and gets the first result back.
    pub command_id: Option<String>,
    /// Ties together everything that followed from one outside request.
    pub correlation_id: Uuid,
    /// The event (or request) that directly caused this command.
    pub causation_id: Option<Uuid>,
    /// Who: `token:<name>`, `cli:<user>`, `system:<component>`, `subject`.
    pub actor: String,
}

impl EventMetadata {
    /// Metadata for a command with no outside cause: a fresh correlation id.
    pub fn new(actor: impl Into<String>) -> Self {
        Self {
            command_id: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor: actor.into(),
        }
    }

    #[must_use]
    pub fn with_command_id(mut self, command_id: impl Into<String>) -> Self {
        self.command_id = Some(command_id.into());
        self
    }
}

/// One event as stored, with its place in the log and its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique and increasing across the whole log (not gap-free, not commit-ordered on
    /// Postgres: read the global log through [`EventStore::read_all`]).
    pub position: i64,
    /// The writing transaction on Postgres; always 0 on SQLite.
    pub transaction_id: i64,
    pub stream_id: RequestId,
    /// 1 for the first event of a stream, then +1 per event.
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub event_id: Uuid,
    pub command_id: Option<String>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub actor: String,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

impl RecordedEvent {
    /// The domain event this row holds.
    pub fn event(&self) -> Result<Event, StoreError> {
        Event::from_stored(&self.event_type, &self.payload).map_err(|e| {
            StoreError::Corrupt(format!(
                "event at position {} ({}) does not decode: {e}",
                self.position, self.event_type
            ))
        })
    }

    /// The place of this event in the global read order.
    pub const fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }

    /// The hash this event should have, recomputed from its content and `prev_hash`.
    pub fn expected_hash(&self) -> String {
        chain_hash(&self.prev_hash, self)
    }
}

/// A place in the global read order: the last event a reader has seen.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Checkpoint {
    pub transaction_id: i64,
    pub position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const START: Self = Self {
        transaction_id: 0,
        position: 0,
    };
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.transaction_id, self.position)
    }
}

impl FromStr for Checkpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("{s:?} is not a checkpoint (expected TRANSACTION-POSITION, e.g. 0-42)");
        let (tx, pos) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            transaction_id: tx.parse().map_err(|_| bad())?,
            position: pos.parse().map_err(|_| bad())?,
        })
    }
}

/// What became of an append.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// The events were written, in this order.
    Written(Vec<RecordedEvent>),
    /// The command id was seen before: nothing was written, and this was its first result.
    Duplicate(CommandRecord),
}

/// The first result of a command id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub command_id: String,
    pub stream_id: RequestId,
    pub first_version: i64,
    pub last_version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else appended to the stream since it was read: reload and decide again.
    #[error("stream {stream_id} is at version {actual}, not the expected {expected}")]
    Conflict {
        stream_id: RequestId,
        expected: i64,
        actual: i64,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A downstream system (the Kafka broker) did not take what a subscriber handed it.
    #[error("{0}")]
    Downstream(String),
    /// The database cannot be reached now: connection refused or lost, no connection within
    /// the pool's acquire time-out, the server shutting down or out of connections, SQLite
    /// locked by another process past its busy timeout. Nothing is wrong with the call; try
    /// again later. For an append it does not say whether the append was committed (the
    /// connection may have gone while the commit was under way): see ADR 14 for why retrying
    /// is still safe.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    // The source is in the message, not chained, so `{:#}` does not print it twice.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if reachability::is_unreachable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Database(error)
        }
    }
}

impl StoreError {
    /// Whether this is [`StoreError::Unavailable`]: the database cannot be reached now.
    pub const fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The same failure for another caller that shared the failed call (a batched lookup or
    /// write answers each of its callers): an outage stays an outage, anything else is
    /// passed on as its message.
    pub(crate) fn for_another(&self) -> Self {
        match self {
            Self::Unavailable(message) => Self::Unavailable(message.clone()),
            other => Self::Downstream(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(error)
    }
}

/// One append: events for one stream, written together or not at all.
#[derive(Debug, Clone)]
pub struct Append {
    pub stream_id: RequestId,
    /// The version the stream must be at (0: the stream must not exist yet).
    pub expected_version: i64,
    pub events: Vec<Event>,
    pub metadata: EventMetadata,
    /// A new request's wrapped data key and blind indexes, written in the same transaction as
    /// its first event, so a submission costs one commit.
    pub key: Option<NewKey>,
}

/// A request's wrapped data key and the blind indexes of its subject (see
/// [`crate::store::sealing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub wrapped_key: String,
    pub indexes: Vec<String>,
}

/// The event log.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug {
    /// Appends `events` to `stream_id` if the stream is at `expected_version` (0: the stream
    /// must not exist yet). All events of one call are written in one transaction, or none.
    async fn append(
        &self,
        stream_id: RequestId,
        expected_version: i64,
        events: &[Event],
        metadata: &EventMetadata,
    ) -> Result<Appended, StoreError> {
        self.append_one(Append {
            stream_id,
            expected_version,
            events: events.to_vec(),
            metadata: metadata.clone(),
            key: None,
        })
        .await
    }

    /// Writes one append. Appends from concurrent callers are group-committed: gathered while
    /// the previous batch commits and written together in one transaction, each with its own
    /// result.
    async fn append_one(&self, append: Append) -> Result<Appended, StoreError>;

    /// Writes many appends with as few transactions as possible, answering each in order. An
    /// append that conflicts or repeats a command id fails (or is a duplicate) alone; appends
    /// to the same stream are applied in order.
    async fn append_batch(&self, appends: Vec<Append>) -> Vec<Result<Appended, StoreError>>;

    /// Whether every event at or below `head_position` has been read by a reader that reached
    /// `checkpoint` (on Postgres the read order is not the position order).
    async fn caught_up(
        &self,
        checkpoint: Checkpoint,
        head_position: i64,
    ) -> Result<bool, StoreError>;

    /// The events of one stream with a version above `after_version`, in version order.
    async fn read_stream(
        &self,
        stream_id: RequestId,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events after `after`, in the global read order. Never skips an event:
    /// an event whose transaction is still open is not returned until it commits, and then
    /// comes after the checkpoint of everything already returned.
    async fn read_all(
        &self,
        after: Checkpoint,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The first result of a command id, if it was seen.
    async fn find_command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError>;

    /// The recorded head (version and last hash) of a stream.
    async fn stream_head(&self, stream_id: RequestId) -> Result<Option<StreamHead>, StoreError>;

    /// The events of several streams, each stream's in version order (one query where the
    /// store can: the workers load a claim's requests together).
    async fn read_streams(
        &self,
        stream_ids: &[RequestId],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = Vec::new();
        for id in stream_ids {
            events.extend(self.read_stream(*id, 0).await?);
        }
        Ok(events)
    }

    /// The stream's head and then all its events (an audit read: events appended after the
    /// head only extend the chain it vouches for). Postgres answers in one statement.
    async fn read_stream_with_head(
        &self,
        stream_id: RequestId,
    ) -> Result<(Option<StreamHead>, Vec<RecordedEvent>), StoreError> {
        let head = self.stream_head(stream_id).await?;
        let events = self.read_stream(stream_id, 0).await?;
        Ok((head, events))
    }

    /// Up to `limit` streams with an id above `after`, in id order, with their heads.
    async fn list_streams(
        &self,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<(RequestId, StreamHead)>, StoreError>;

    /// The highest position in the log (0 when empty). Positions are not gap-free, so the
    /// distance from a checkpoint is an estimate of events behind, good for a lag figure.
    async fn head_position(&self) -> Result<i64, StoreError>;

    /// Checks the database is reachable.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A stream's head as recorded in the `streams` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub version: i64,
    pub last_hash: String,
}

/// Prepares rows for an append: ids, time, hashes. Shared by both stores so the chain is the
/// same byte for byte.
pub(crate) fn prepare_rows(
    stream_id: RequestId,
    expected_version: i64,
    prev_hash: &str,
    events: &[Event],
    metadata: &EventMetadata,
) -> Vec<RecordedEvent> {
    let recorded_at = now_micros();
    let mut prev = prev_hash.to_owned();
    let mut rows = Vec::with_capacity(events.len());
    for (offset, event) in (1_i64..).zip(events) {
        let mut row = RecordedEvent {
            position: 0,
            transaction_id: 0,
            stream_id,
            version: expected_version + offset,
            event_type: event.event_type().to_owned(),
            schema_version: SCHEMA_VERSION,
            payload: event.payload(),
            event_id: Uuid::now_v7(),
            command_id: metadata.command_id.clone(),
            correlation_id: metadata.correlation_id,
            causation_id: metadata.causation_id,
            actor: metadata.actor.clone(),
            recorded_at,
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        row.hash = row.expected_hash();
        prev.clone_from(&row.hash);
        rows.push(row);
    }
    rows
}

/// Now, truncated to the microseconds both databases keep, so that a hash computed before the
/// write equals the one recomputed after a read.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
