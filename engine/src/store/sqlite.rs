//! The SQLite event store: the embedded default, a single file, no server.
//!
//! SQLite lets one writer in at a time, so positions are assigned in commit order and a plain
//! `position > checkpoint` read is gap-safe. All writes go through one connection (so this
//! process never fights itself for the write lock); reads use a small pool of their own. WAL
//! mode lets readers run beside the writer, and `synchronous = FULL` makes a committed append
//! survive a power cut.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::RequestId;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::group::{self, GroupCommit, WriteBatch};
use super::{
    prepare_rows, Append, Appended, Checkpoint, CommandRecord, EventStore, OpenError,
    RecordedEvent, StoreError, StreamHead, GENESIS_HASH,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const EVENT_COLUMNS: &str = "position, stream_id, version, event_type, schema_version, payload, \
     event_id, command_id, correlation_id, causation_id, actor, recorded_at, prev_hash, hash";

/// Appends written in one transaction at most.
const MAX_BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    group: GroupCommit,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file at `path`, and its directory.
    pub async fn open(path: &str) -> Result<Self, OpenError> {
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Directory {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(StoreError::from)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted rows (shredded data keys) are overwritten, not left in free pages.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::from)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(StoreError::from)?;
        // One batch writer: there is one writing connection.
        let group = GroupCommit::start(1, MAX_BATCH, batch_writer(writer.clone()));
        Ok(Self {
            writer,
            reader,
            group,
        })
    }

    /// The pool that writes; use it for anything that must see the latest commit.
    pub const fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool that reads (WAL: each statement sees every commit made before it started).
    pub const fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }
}

fn parse_uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("{column} {text:?}: {e}")))
}

fn parse_optional_uuid(row: &SqliteRow, column: &str) -> Result<Option<Uuid>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| StoreError::Corrupt(format!("{column}: {e}"))))
        .transpose()
}

fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn decode(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let payload: String = row.try_get("payload")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        transaction_id: 0,
        stream_id: RequestId::from_uuid(parse_uuid(row, "stream_id")?),
        version: row.try_get("version")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("payload is not JSON: {e}")))?,
        event_id: parse_uuid(row, "event_id")?,
        command_id: row.try_get("command_id")?,
        correlation_id: parse_uuid(row, "correlation_id")?,
        causation_id: parse_optional_uuid(row, "causation_id")?,
        actor: row.try_get("actor")?,
        recorded_at: DateTime::parse_from_rfc3339(&recorded_at)
            .map_err(|e| StoreError::Corrupt(format!("recorded_at {recorded_at:?}: {e}")))?
            .with_timezone(&Utc),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn decode_command(row: &SqliteRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        command_id: row.try_get("command_id")?,
        stream_id: RequestId::from_uuid(parse_uuid(row, "stream_id")?),
        first_version: row.try_get("first_version")?,
        last_version: row.try_get("last_version")?,
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_one(&self, append: Append) -> Result<Appended, StoreError> {
        self.group.append(append).await
    }

    async fn append_batch(&self, appends: Vec<Append>) -> Vec<Result<Appended, StoreError>> {
        group::write_all(&batch_writer(self.writer.clone()), appends, MAX_BATCH).await
    }

    async fn caught_up(
        &self,
        checkpoint: Checkpoint,
        head_position: i64,
    ) -> Result<bool, StoreError> {
        // One writer at a time: positions are handed out in commit order.
        Ok(checkpoint.position >= head_position)
    }

    async fn read_stream(
        &self,
        stream_id: RequestId,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version > ?2 \
             ORDER BY version"
        );
        let rows = sqlx::query(&sql)
            .bind(stream_id.to_string())
            .bind(after_version)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn read_all(
        &self,
        after: Checkpoint,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
        );
        let rows = sqlx::query(&sql)
            .bind(after.position)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn find_command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT command_id, stream_id, first_version, last_version FROM commands \
             WHERE command_id = ?1",
        )
        .bind(command_id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(decode_command).transpose()
    }

    async fn stream_head(&self, stream_id: RequestId) -> Result<Option<StreamHead>, StoreError> {
        let row = sqlx::query("SELECT version, last_hash FROM streams WHERE stream_id = ?1")
            .bind(stream_id.to_string())
            .fetch_optional(&self.reader)
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
             WHERE stream_id > ?1 ORDER BY stream_id LIMIT ?2",
        )
        .bind(after.map_or_else(String::new, |id| id.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    RequestId::from_uuid(parse_uuid(row, "stream_id")?),
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
            .fetch_one(&self.reader)
            .await?;
        Ok(head.unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}

fn batch_writer(writer: SqlitePool) -> WriteBatch {
    std::sync::Arc::new(move |appends| {
        let writer = writer.clone();
        Box::pin(async move { write_batch(&writer, appends).await })
    })
}

/// Writes a batch in one transaction (one `fsync`). The checks run inside the transaction,
/// which holds the database's write lock, so each append sees the ones before it. If the
/// transaction fails as a whole, each append is written on its own.
async fn write_batch(
    writer: &SqlitePool,
    appends: Vec<Append>,
) -> Vec<Result<Appended, StoreError>> {
    match try_batch(writer, &appends).await {
        Ok(results) => results,
        Err(error) if appends.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::debug!(%error, size = appends.len(), "batch append failed; appending one by one");
            let mut results = Vec::with_capacity(appends.len());
            for append in appends {
                results.push(
                    match try_batch(writer, std::slice::from_ref(&append)).await {
                        Ok(mut r) => r.pop().unwrap_or_else(|| {
                            Err(StoreError::Corrupt(
                                "an append returned no result".to_owned(),
                            ))
                        }),
                        Err(e) => Err(e),
                    },
                );
            }
            results
        }
    }
}

async fn try_batch(
    writer: &SqlitePool,
    appends: &[Append],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    if appends.iter().all(|a| a.events.is_empty()) {
        return Ok(appends
            .iter()
            .map(|_| Ok(Appended::Written(Vec::new())))
            .collect());
    }
    let mut tx = writer.begin().await?;
    let mut results = Vec::with_capacity(appends.len());
    for append in appends {
        results.push(append_in(&mut tx, append).await?);
    }
    tx.commit().await?;
    Ok(results)
}

/// One append inside the batch's transaction. The outer `Result` is a database failure (the
/// whole batch is retried one by one); the inner one this append's own outcome.
async fn append_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    append: &Append,
) -> Result<Result<Appended, StoreError>, StoreError> {
    let Append {
        stream_id,
        expected_version,
        events,
        metadata,
        key,
    } = append;
    let (stream_id, expected_version) = (*stream_id, *expected_version);
    if events.is_empty() {
        return Ok(Ok(Appended::Written(Vec::new())));
    }
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let new_version = expected_version + count;
    let stream_text = stream_id.to_string();

    if let Some(command_id) = &metadata.command_id {
        let seen = sqlx::query(
            "SELECT command_id, stream_id, first_version, last_version FROM commands \
             WHERE command_id = ?1",
        )
        .bind(command_id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = seen {
            return Ok(Ok(Appended::Duplicate(decode_command(&row)?)));
        }
    }

    let head = sqlx::query("SELECT version, last_hash FROM streams WHERE stream_id = ?1")
        .bind(&stream_text)
        .fetch_optional(&mut **tx)
        .await?;
    let (actual, prev_hash): (i64, String) = match head {
        Some(row) => (row.try_get("version")?, row.try_get("last_hash")?),
        None => (0, GENESIS_HASH.to_owned()),
    };
    if actual != expected_version {
        return Ok(Err(StoreError::Conflict {
            stream_id,
            expected: expected_version,
            actual,
        }));
    }

    if let Some(command_id) = &metadata.command_id {
        sqlx::query(
            "INSERT INTO commands (command_id, stream_id, first_version, last_version) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(command_id)
        .bind(&stream_text)
        .bind(expected_version + 1)
        .bind(new_version)
        .execute(&mut **tx)
        .await?;
    }

    let rows = prepare_rows(stream_id, expected_version, &prev_hash, events, metadata);
    let last_hash = rows.last().map(|r| r.hash.clone()).unwrap_or_default();
    sqlx::query(
        "INSERT INTO streams (stream_id, version, last_hash) VALUES (?1, ?2, ?3) \
         ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
         last_hash = excluded.last_hash",
    )
    .bind(&stream_text)
    .bind(new_version)
    .bind(&last_hash)
    .execute(&mut **tx)
    .await?;

    let mut written = Vec::with_capacity(rows.len());
    for mut row in rows {
        let position: i64 = sqlx::query_scalar(
            "INSERT INTO events (stream_id, version, event_type, schema_version, payload, \
             event_id, command_id, correlation_id, causation_id, actor, recorded_at, \
             prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
             RETURNING position",
        )
        .bind(&stream_text)
        .bind(row.version)
        .bind(&row.event_type)
        .bind(row.schema_version)
        .bind(row.payload.to_string())
        .bind(row.event_id.to_string())
        .bind(&row.command_id)
        .bind(row.correlation_id.to_string())
        .bind(row.causation_id.map(|id| id.to_string()))
        .bind(&row.actor)
        .bind(format_time(row.recorded_at))
        .bind(&row.prev_hash)
        .bind(&row.hash)
        .fetch_one(&mut **tx)
        .await?;
        row.position = position;
        written.push(row);
    }

    if let Some(key) = key {
        sqlx::query("INSERT INTO request_keys (request_id, wrapped_key) VALUES (?1, ?2)")
            .bind(&stream_text)
            .bind(&key.wrapped_key)
            .execute(&mut **tx)
            .await?;
        for index in &key.indexes {
            sqlx::query(
                "INSERT INTO subject_index (blind_index, request_id) VALUES (?1, ?2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(index)
            .bind(&stream_text)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(Ok(Appended::Written(written)))
}
