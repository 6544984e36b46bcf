//! The SQLite event store: the embedded default, a single file, no server.
//!
//! SQLite lets one writer in at a time, so positions are assigned in commit order and a plain
//! `position > checkpoint` read is gap-safe. All writes go through one connection (so this
//! process never fights itself for the write lock); reads use a small pool of their own. WAL
//! mode lets readers run beside the writer, and `synchronous = FULL` makes a committed append
//! survive a power cut.

use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
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
            // Statement journals (a multi-row insert that may fail part way is undone alone)
            // in memory, not in a temporary file written and read back for every batch.
            .pragma("temp_store", "MEMORY")
            .busy_timeout(Duration::from_secs(10));
        // The one writing connection keeps more pages in memory (32 MiB instead of 2): a batch
        // touches pages all over the blind-index and event indexes, and re-reading them from
        // the file was a tenth of its time. (Checkpointing less often, every 4,000 pages
        // instead of 1,000, made bulk intake faster still but added 10-15 ms to the p99 of
        // single submissions: the commit that checkpoints holds the writer longer.)
        let writer_options = options.clone().pragma("cache_size", "-32768");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_options)
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
        super::migration_renumbering::renumber_sqlite(&self.writer, &MIGRATOR).await?;
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }
}

fn parse_uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("{column} {text:?}: {e}")))
}

fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The events an inner query selects, ordered by `order`, as one JSON array of arrays (the
/// columns of [`EVENT_COLUMNS`] in order; the payload as JSON, not as text).
///
/// sqlx runs SQLite on a worker thread and hands every result row across a channel: a
/// rebuild spent 30 % of its time in those hand-offs (docs/PERFORMANCE.md). One aggregate row
/// per read is one hand-off, and the text is decoded in one pass by [`decode_all`].
fn events_as_json(inner: &str, order: &str) -> String {
    format!(
        "SELECT json_group_array(json_array(position, stream_id, version, event_type, \
         schema_version, json(payload), event_id, command_id, correlation_id, causation_id, \
         actor, recorded_at, prev_hash, hash) ORDER BY {order}) FROM ({inner})"
    )
}

/// One event as [`events_as_json`] lists it.
#[derive(serde::Deserialize)]
struct EventRow(
    i64,
    Uuid,
    i64,
    String,
    i32,
    serde_json::Value,
    Uuid,
    Option<String>,
    Uuid,
    Option<Uuid>,
    String,
    DateTime<Utc>,
    String,
    String,
);

/// Decodes what [`events_as_json`] returned.
fn decode_all(text: &str) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows: Vec<EventRow> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("an event row does not decode: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|row| RecordedEvent {
            position: row.0,
            transaction_id: 0,
            stream_id: RequestId::from_uuid(row.1),
            version: row.2,
            event_type: row.3,
            schema_version: row.4,
            payload: row.5,
            event_id: row.6,
            command_id: row.7,
            correlation_id: row.8,
            causation_id: row.9,
            actor: row.10,
            recorded_at: row.11,
            prev_hash: row.12,
            hash: row.13,
        })
        .collect())
}

/// Runs an [`events_as_json`] query; `what` names the events read, for the error when a
/// stored payload is not JSON (SQLite's `json()` refuses it and fails the whole read).
async fn fetch_events<'q>(
    query: sqlx::query::QueryScalar<'q, sqlx::Sqlite, String, sqlx::sqlite::SqliteArguments<'q>>,
    pool: &SqlitePool,
    what: impl FnOnce() -> String,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let text = match query.fetch_one(pool).await {
        Ok(text) => text,
        Err(sqlx::Error::Database(e)) if e.message().contains("malformed JSON") => {
            return Err(StoreError::Corrupt(format!(
                "a payload among the {} is not JSON",
                what()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    decode_all(&text)
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
        // One writing connection: one transaction at a time.
        group::write_all(&batch_writer(self.writer.clone()), appends, MAX_BATCH, 1).await
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
        static SQL: LazyLock<String> = LazyLock::new(|| {
            events_as_json(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version > ?2"
                ),
                "version",
            )
        });
        let query = sqlx::query_scalar(&SQL)
            .bind(stream_id.to_string())
            .bind(after_version);
        fetch_events(query, &self.reader, || {
            format!("events of stream {stream_id}")
        })
        .await
    }

    async fn read_streams(
        &self,
        stream_ids: &[RequestId],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        static SQL: LazyLock<String> = LazyLock::new(|| {
            events_as_json(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events \
                     WHERE stream_id IN (SELECT value FROM json_each(?1))"
                ),
                "stream_id, version",
            )
        });
        let ids: Vec<String> = stream_ids.iter().map(ToString::to_string).collect();
        let query = sqlx::query_scalar(&SQL)
            .bind(serde_json::to_string(&ids).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        fetch_events(query, &self.reader, || {
            format!("events of streams {}", ids.join(", "))
        })
        .await
    }

    async fn read_all(
        &self,
        after: Checkpoint,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            events_as_json(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 \
                     ORDER BY position LIMIT ?2"
                ),
                "position",
            )
        });
        let query = sqlx::query_scalar(&SQL)
            .bind(after.position)
            .bind(i64::from(limit));
        fetch_events(query, &self.reader, || {
            format!("events after position {}", after.position)
        })
        .await
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
/// which holds the database's write lock, so each append sees the ones before it (see
/// [`group::with_fallback`] for when that transaction fails).
async fn write_batch(
    writer: &SqlitePool,
    appends: Vec<Append>,
) -> Vec<Result<Appended, StoreError>> {
    group::with_fallback(&appends, |some| try_batch(writer, some)).await
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
    // Each statement is a trip to sqlx's SQLite worker thread, so the batch is written with a
    // few statements over JSON arrays (`json_each`), not a few per append.
    let mut tx = writer.begin().await?;
    let mut outcomes: Vec<Option<Result<Appended, StoreError>>> =
        appends.iter().map(|_| None).collect();
    let mut rows: Vec<Vec<RecordedEvent>> = appends.iter().map(|_| Vec::new()).collect();

    // Commands seen before: their first result.
    let command_ids: Vec<&str> = appends
        .iter()
        .filter(|a| !a.events.is_empty())
        .filter_map(|a| a.metadata.command_id.as_deref())
        .collect();
    let mut seen = std::collections::HashMap::new();
    if !command_ids.is_empty() {
        let found = sqlx::query(
            "SELECT command_id, stream_id, first_version, last_version FROM commands \
             WHERE command_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(&command_ids)?)
        .fetch_all(&mut *tx)
        .await?;
        for row in &found {
            let record = decode_command(row)?;
            seen.insert(record.command_id.clone(), record);
        }
    }

    // The heads of the streams, to check versions and chain the new events.
    let streams: Vec<String> = appends.iter().map(|a| a.stream_id.to_string()).collect();
    let found = sqlx::query(
        "SELECT stream_id, version, last_hash FROM streams \
         WHERE stream_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_list(&streams)?)
    .fetch_all(&mut *tx)
    .await?;
    let mut heads = std::collections::HashMap::with_capacity(found.len());
    for row in &found {
        let id: String = row.try_get("stream_id")?;
        let version: i64 = row.try_get("version")?;
        let hash: String = row.try_get("last_hash")?;
        heads.insert(id, (version, hash));
    }

    let (mut commands, mut heads_out, mut events, mut keys, mut indexes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (n, append) in appends.iter().enumerate() {
        if append.events.is_empty() {
            outcomes[n] = Some(Ok(Appended::Written(Vec::new())));
            continue;
        }
        if let Some(record) = append
            .metadata
            .command_id
            .as_ref()
            .and_then(|id| seen.get(id))
        {
            outcomes[n] = Some(Ok(Appended::Duplicate(record.clone())));
            continue;
        }
        let stream = &streams[n];
        let (actual, prev_hash) = heads
            .get(stream)
            .map_or((0, GENESIS_HASH), |(v, h)| (*v, h.as_str()));
        if actual != append.expected_version {
            outcomes[n] = Some(Err(StoreError::Conflict {
                stream_id: append.stream_id,
                expected: append.expected_version,
                actual,
            }));
            continue;
        }
        let count = i64::try_from(append.events.len()).unwrap_or(i64::MAX);
        let new_version = append.expected_version + count;
        let prepared = prepare_rows(
            append.stream_id,
            append.expected_version,
            prev_hash,
            &append.events,
            &append.metadata,
        );
        if let Some(command_id) = &append.metadata.command_id {
            commands.push(serde_json::json!([
                command_id,
                stream,
                append.expected_version + 1,
                new_version
            ]));
        }
        let last_hash = prepared.last().map(|r| r.hash.clone()).unwrap_or_default();
        heads_out.push(serde_json::json!([stream, new_version, last_hash]));
        for row in &prepared {
            events.push(serde_json::json!([
                stream,
                row.version,
                row.event_type,
                row.schema_version,
                row.payload.to_string(),
                row.event_id.to_string(),
                row.command_id,
                row.correlation_id.to_string(),
                row.causation_id.map(|id| id.to_string()),
                row.actor,
                format_time(row.recorded_at),
                row.prev_hash,
                row.hash,
            ]));
        }
        if let Some(key) = &append.key {
            keys.push(serde_json::json!([stream, key.wrapped_key]));
            for index in &key.indexes {
                indexes.push(serde_json::json!([index, stream]));
            }
        }
        rows[n] = prepared;
    }

    if !commands.is_empty() {
        sqlx::query(
            "INSERT INTO commands (command_id, stream_id, first_version, last_version) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1)",
        )
        .bind(serde_json::Value::Array(commands).to_string())
        .execute(&mut *tx)
        .await?;
    }
    if !heads_out.is_empty() {
        sqlx::query(
            "INSERT INTO streams (stream_id, version, last_hash) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1) WHERE true \
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
             last_hash = excluded.last_hash",
        )
        .bind(serde_json::Value::Array(heads_out).to_string())
        .execute(&mut *tx)
        .await?;
    }
    let mut places = std::collections::HashMap::with_capacity(events.len());
    if !events.is_empty() {
        // Each reference to `json_each`'s `value` turns the element back into text, and each
        // `->>` parses it: thirteen of each per event, a fifth of the writer's time in a bulk
        // intake. Materialized, the text is made once per event, and the `->>`s find it
        // parsed in SQLite's JSON cache.
        let written = sqlx::query(
            "WITH r(k, v) AS MATERIALIZED (SELECT key, value FROM json_each(?1)) \
             INSERT INTO events (stream_id, version, event_type, schema_version, payload, \
             event_id, command_id, correlation_id, causation_id, actor, recorded_at, \
             prev_hash, hash) \
             SELECT v ->> 0, v ->> 1, v ->> 2, v ->> 3, v ->> 4, v ->> 5, v ->> 6, v ->> 7, \
             v ->> 8, v ->> 9, v ->> 10, v ->> 11, v ->> 12 FROM r ORDER BY k \
             RETURNING position, event_id",
        )
        .bind(serde_json::Value::Array(events).to_string())
        .fetch_all(&mut *tx)
        .await?;
        for row in &written {
            let event_id: String = row.try_get("event_id")?;
            let position: i64 = row.try_get("position")?;
            places.insert(event_id, position);
        }
    }
    if !keys.is_empty() {
        sqlx::query(
            "INSERT INTO request_keys (request_id, wrapped_key) \
             SELECT value ->> 0, value ->> 1 FROM json_each(?1)",
        )
        .bind(serde_json::Value::Array(keys).to_string())
        .execute(&mut *tx)
        .await?;
    }
    if !indexes.is_empty() {
        sqlx::query(
            "INSERT INTO subject_index (blind_index, request_id) \
             SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true \
             ON CONFLICT DO NOTHING",
        )
        .bind(serde_json::Value::Array(indexes).to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    let mut results = Vec::with_capacity(appends.len());
    for (outcome, mut prepared) in outcomes.into_iter().zip(rows) {
        results.push(match outcome {
            Some(result) => result,
            None => {
                for row in &mut prepared {
                    row.position =
                        places
                            .get(&row.event_id.to_string())
                            .copied()
                            .ok_or_else(|| {
                                StoreError::Corrupt(format!(
                                    "event {} was not written",
                                    row.event_id
                                ))
                            })?;
                }
                Ok(Appended::Written(prepared))
            }
        });
    }
    Ok(results)
}

fn json_list(items: &[impl serde::Serialize]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| StoreError::Corrupt(format!("a JSON list: {e}")))
}
