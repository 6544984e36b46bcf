//! Reading the log on SQLite, and the event store's entry points (appends go to
//! [`super::append`]).

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::RequestId;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::{SqliteStore, EVENT_COLUMNS, MAX_BATCH};
use crate::store::group;
use crate::store::{
    Append, Appended, Checkpoint, CommandRecord, EventStore, RecordedEvent, StoreError, StreamHead,
};

fn parse_uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("{column} {text:?}: {e}")))
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

pub(super) fn decode_command(row: &SqliteRow) -> Result<CommandRecord, StoreError> {
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
        group::write_all(&self.group_writer(), appends, MAX_BATCH, 1).await
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
