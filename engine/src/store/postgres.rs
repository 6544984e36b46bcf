//! The Postgres event store, for production and for several engine instances at once.
//!
//! Gap safety: positions come from an identity column, so they are handed out in insert order
//! but become visible in commit order. A reader that simply followed positions could pass a
//! position whose transaction commits later and never see it. Every event therefore records
//! its writing transaction (`pg_current_xact_id()`), and readers take only events whose
//! transaction is older than the oldest one still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`), in (transaction id, position) order. All such
//! transactions have finished, so nothing can appear later below the reader's checkpoint.

use async_trait::async_trait;
use lethe_domain::{Event, RequestId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

use super::{
    prepare_rows, Appended, Checkpoint, CommandRecord, EventMetadata, EventStore, RecordedEvent,
    StoreError, StreamHead, GENESIS_HASH,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const EVENT_COLUMNS: &str = "position, transaction_id::text::bigint AS transaction_id, stream_id, \
     version, event_type, schema_version, payload, event_id, command_id, correlation_id, \
     causation_id, actor, recorded_at, prev_hash, hash";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        Self::connect_with(options).await
    }

    /// Connects with explicit options (tests use them to put each test in its own schema).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub const fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations from `migrations/postgres`; a no-op when up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

fn decode(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        transaction_id: row.try_get("transaction_id")?,
        stream_id: RequestId::from_uuid(row.try_get("stream_id")?),
        version: row.try_get("version")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: row.try_get("payload")?,
        event_id: row.try_get("event_id")?,
        command_id: row.try_get("command_id")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        actor: row.try_get("actor")?,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn decode_command(row: &PgRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        command_id: row.try_get("command_id")?,
        stream_id: RequestId::from_uuid(row.try_get("stream_id")?),
        first_version: row.try_get("first_version")?,
        last_version: row.try_get("last_version")?,
    })
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream_id: RequestId,
        expected_version: i64,
        events: &[Event],
        metadata: &EventMetadata,
    ) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Ok(Appended::Written(Vec::new()));
        }
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let new_version = expected_version + count;
        let mut tx = self.pool.begin().await?;

        if let Some(command_id) = &metadata.command_id {
            // Blocks while another transaction holds the same id, then sees its outcome.
            let inserted = sqlx::query(
                "INSERT INTO commands (command_id, stream_id, first_version, last_version) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (command_id) DO NOTHING",
            )
            .bind(command_id)
            .bind(stream_id.as_uuid())
            .bind(expected_version + 1)
            .bind(new_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return match self.find_command(command_id).await? {
                    Some(record) => Ok(Appended::Duplicate(record)),
                    None => Err(StoreError::Corrupt(format!(
                        "command {command_id} vanished while being checked"
                    ))),
                };
            }
        }

        let prev_hash = if expected_version == 0 {
            GENESIS_HASH.to_owned()
        } else {
            let head = sqlx::query(
                "SELECT version, last_hash FROM streams WHERE stream_id = $1 FOR UPDATE",
            )
            .bind(stream_id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
            let (actual, last_hash): (i64, String) = match head {
                Some(row) => (row.try_get("version")?, row.try_get("last_hash")?),
                None => (0, String::new()),
            };
            if actual != expected_version {
                return Err(StoreError::Conflict {
                    stream_id,
                    expected: expected_version,
                    actual,
                });
            }
            last_hash
        };

        let mut rows = prepare_rows(stream_id, expected_version, &prev_hash, events, metadata);
        let last_hash = rows.last().map(|r| r.hash.clone()).unwrap_or_default();

        if expected_version == 0 {
            let created = sqlx::query(
                "INSERT INTO streams (stream_id, version, last_hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (stream_id) DO NOTHING",
            )
            .bind(stream_id.as_uuid())
            .bind(new_version)
            .bind(&last_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if created == 0 {
                tx.rollback().await?;
                let actual = self.stream_head(stream_id).await?.map_or(0, |h| h.version);
                return Err(StoreError::Conflict {
                    stream_id,
                    expected: 0,
                    actual,
                });
            }
        } else {
            sqlx::query("UPDATE streams SET version = $2, last_hash = $3 WHERE stream_id = $1")
                .bind(stream_id.as_uuid())
                .bind(new_version)
                .bind(&last_hash)
                .execute(&mut *tx)
                .await?;
        }

        for row in &mut rows {
            let written = sqlx::query(
                "INSERT INTO events (stream_id, version, event_type, schema_version, payload, \
                 event_id, command_id, correlation_id, causation_id, actor, recorded_at, \
                 prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 RETURNING position, transaction_id::text::bigint AS transaction_id",
            )
            .bind(stream_id.as_uuid())
            .bind(row.version)
            .bind(&row.event_type)
            .bind(row.schema_version)
            .bind(&row.payload)
            .bind(row.event_id)
            .bind(&row.command_id)
            .bind(row.correlation_id)
            .bind(row.causation_id)
            .bind(&row.actor)
            .bind(row.recorded_at)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .fetch_one(&mut *tx)
            .await?;
            row.position = written.try_get("position")?;
            row.transaction_id = written.try_get("transaction_id")?;
        }
        tx.commit().await?;
        Ok(Appended::Written(rows))
    }

    async fn read_stream(
        &self,
        stream_id: RequestId,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 \
             ORDER BY version"
        );
        let rows = sqlx::query(&sql)
            .bind(stream_id.as_uuid())
            .bind(after_version)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn read_all(
        &self,
        after: Checkpoint,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE (transaction_id, position) > ($1::text::xid8, $2) \
               AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY transaction_id, position LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(after.transaction_id.to_string())
            .bind(after.position)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn find_command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT command_id, stream_id, first_version, last_version FROM commands \
             WHERE command_id = $1",
        )
        .bind(command_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_command).transpose()
    }

    async fn stream_head(&self, stream_id: RequestId) -> Result<Option<StreamHead>, StoreError> {
        let row = sqlx::query("SELECT version, last_hash FROM streams WHERE stream_id = $1")
            .bind(stream_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(StreamHead {
                version: row.try_get("version")?,
                last_hash: row.try_get("last_hash")?,
            })
        })
        .transpose()
    }

    async fn list_streams(
        &self,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<(RequestId, StreamHead)>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream_id, version, last_hash FROM streams \
             WHERE $1::uuid IS NULL OR stream_id > $1 ORDER BY stream_id LIMIT $2",
        )
        .bind(after.map(|id| *id.as_uuid()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    RequestId::from_uuid(row.try_get("stream_id")?),
                    StreamHead {
                        version: row.try_get("version")?,
                        last_hash: row.try_get("last_hash")?,
                    },
                ))
            })
            .collect()
    }

    async fn head_position(&self) -> Result<i64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(head.unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
