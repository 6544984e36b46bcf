//! Writing a batch of appends on SQLite in one transaction. Each statement is a trip to
//! sqlx's SQLite worker thread, so the batch is written with a few statements over JSON
//! arrays (`json_each`), not a few per append: read the commands seen and the stream heads,
//! decide every append, then write commands, heads, events, keys and blind indexes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::read::decode_command;
use crate::store::group::{self, WriteBatch};
use crate::store::{
    prepare_rows, Append, Appended, CommandRecord, RecordedEvent, StoreError, GENESIS_HASH,
};

type Tx<'c> = Transaction<'c, Sqlite>;

/// Each append's result when it is decided before the write (empty, duplicate, conflict);
/// `None` for those written.
type Outcomes = Vec<Option<Result<Appended, StoreError>>>;

pub(super) fn batch_writer(writer: SqlitePool) -> WriteBatch {
    std::sync::Arc::new(move |appends| {
        let writer = writer.clone();
        Box::pin(async move { write_batch(&writer, appends).await })
    })
}

/// Writes a batch of appends in one transaction (see [`group::with_fallback`] for when that
/// transaction fails).
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
    let mut tx = writer.begin().await?;
    let mut outcomes: Outcomes = appends.iter().map(|_| None).collect();
    let mut rows: Vec<Vec<RecordedEvent>> = appends.iter().map(|_| Vec::new()).collect();
    let seen = seen_commands(&mut tx, appends).await?;
    let streams: Vec<String> = appends.iter().map(|a| a.stream_id.to_string()).collect();
    let heads = stream_heads(&mut tx, &streams).await?;
    let mut writes = Writes::default();
    for (n, append) in appends.iter().enumerate() {
        match decide(append, &streams[n], &seen, &heads) {
            Ok(prev_hash) => rows[n] = writes.add(append, &streams[n], prev_hash),
            Err(outcome) => outcomes[n] = Some(outcome),
        }
    }
    let places = writes.write(&mut tx).await?;
    tx.commit().await?;
    answer(outcomes, rows, &places)
}

/// The commands of the batch seen before, with their first result.
async fn seen_commands(
    tx: &mut Tx<'_>,
    appends: &[Append],
) -> Result<HashMap<String, CommandRecord>, StoreError> {
    let command_ids: Vec<&str> = appends
        .iter()
        .filter(|a| !a.events.is_empty())
        .filter_map(|a| a.metadata.command_id.as_deref())
        .collect();
    let mut seen = HashMap::new();
    if !command_ids.is_empty() {
        let found = sqlx::query(
            "SELECT command_id, stream_id, first_version, last_version FROM commands \
             WHERE command_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(&command_ids)?)
        .fetch_all(&mut **tx)
        .await?;
        for row in &found {
            let record = decode_command(row)?;
            seen.insert(record.command_id.clone(), record);
        }
    }
    Ok(seen)
}

/// The heads (version, last hash) of the streams, to check versions and chain new events.
async fn stream_heads(
    tx: &mut Tx<'_>,
    streams: &[String],
) -> Result<HashMap<String, (i64, String)>, StoreError> {
    let found = sqlx::query(
        "SELECT stream_id, version, last_hash FROM streams \
         WHERE stream_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_list(streams)?)
    .fetch_all(&mut **tx)
    .await?;
    let mut heads = HashMap::with_capacity(found.len());
    for row in &found {
        let id: String = row.try_get("stream_id")?;
        let version: i64 = row.try_get("version")?;
        let hash: String = row.try_get("last_hash")?;
        heads.insert(id, (version, hash));
    }
    Ok(heads)
}

/// Whether an append is written (`Ok`: the hash to chain onto) or answered without a write:
/// empty, a duplicate of a command seen, or a conflict.
fn decide<'h>(
    append: &Append,
    stream: &str,
    seen: &HashMap<String, CommandRecord>,
    heads: &'h HashMap<String, (i64, String)>,
) -> Result<&'h str, Result<Appended, StoreError>> {
    if append.events.is_empty() {
        return Err(Ok(Appended::Written(Vec::new())));
    }
    if let Some(record) = append
        .metadata
        .command_id
        .as_ref()
        .and_then(|id| seen.get(id))
    {
        return Err(Ok(Appended::Duplicate(record.clone())));
    }
    let (actual, prev_hash) = heads
        .get(stream)
        .map_or((0, GENESIS_HASH), |(v, h)| (*v, h.as_str()));
    if actual != append.expected_version {
        return Err(Err(StoreError::Conflict {
            stream_id: append.stream_id,
            expected: append.expected_version,
            actual,
        }));
    }
    Ok(prev_hash)
}

/// The rows a batch writes, each table's as one JSON array.
#[derive(Default)]
struct Writes {
    commands: Vec<Value>,
    heads: Vec<Value>,
    events: Vec<Value>,
    keys: Vec<Value>,
    indexes: Vec<Value>,
}

impl Writes {
    /// Adds the rows of one append (its events chained onto `prev_hash`); returns its events.
    fn add(&mut self, append: &Append, stream: &str, prev_hash: &str) -> Vec<RecordedEvent> {
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
            self.commands.push(serde_json::json!([
                command_id,
                stream,
                append.expected_version + 1,
                new_version
            ]));
        }
        let last_hash = prepared.last().map(|r| r.hash.clone()).unwrap_or_default();
        self.heads
            .push(serde_json::json!([stream, new_version, last_hash]));
        for row in &prepared {
            self.events.push(serde_json::json!([
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
            self.keys.push(serde_json::json!([stream, key.wrapped_key]));
            for index in &key.indexes {
                self.indexes.push(serde_json::json!([index, stream]));
            }
        }
        prepared
    }

    /// Writes commands, stream heads, events, keys and blind indexes, in that order; returns
    /// the position of each event written, by event id.
    async fn write(self, tx: &mut Tx<'_>) -> Result<HashMap<String, i64>, StoreError> {
        if !self.commands.is_empty() {
            sqlx::query(
                "INSERT INTO commands (command_id, stream_id, first_version, last_version) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1)",
            )
            .bind(Value::Array(self.commands).to_string())
            .execute(&mut **tx)
            .await?;
        }
        if !self.heads.is_empty() {
            sqlx::query(
                "INSERT INTO streams (stream_id, version, last_hash) \
                 SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1) WHERE true \
                 ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
                 last_hash = excluded.last_hash",
            )
            .bind(Value::Array(self.heads).to_string())
            .execute(&mut **tx)
            .await?;
        }
        let places = insert_events(tx, self.events).await?;
        if !self.keys.is_empty() {
            sqlx::query(
                "INSERT INTO request_keys (request_id, wrapped_key) \
                 SELECT value ->> 0, value ->> 1 FROM json_each(?1)",
            )
            .bind(Value::Array(self.keys).to_string())
            .execute(&mut **tx)
            .await?;
        }
        if !self.indexes.is_empty() {
            sqlx::query(
                "INSERT INTO subject_index (blind_index, request_id) \
                 SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true \
                 ON CONFLICT DO NOTHING",
            )
            .bind(Value::Array(self.indexes).to_string())
            .execute(&mut **tx)
            .await?;
        }
        Ok(places)
    }
}

/// Inserts the events; returns the position of each, by event id.
async fn insert_events(
    tx: &mut Tx<'_>,
    events: Vec<Value>,
) -> Result<HashMap<String, i64>, StoreError> {
    let mut places = HashMap::with_capacity(events.len());
    if events.is_empty() {
        return Ok(places);
    }
    // Each reference to `json_each`'s `value` turns the element back into text, and each
    // `->>` parses it: thirteen of each per event, a fifth of the writer's time in a bulk
    // intake. Materialized, the text is made once per event, and the `->>`s find it parsed
    // in SQLite's JSON cache.
    let written = sqlx::query(
        "WITH r(k, v) AS MATERIALIZED (SELECT key, value FROM json_each(?1)) \
         INSERT INTO events (stream_id, version, event_type, schema_version, payload, \
         event_id, command_id, correlation_id, causation_id, actor, recorded_at, \
         prev_hash, hash) \
         SELECT v ->> 0, v ->> 1, v ->> 2, v ->> 3, v ->> 4, v ->> 5, v ->> 6, v ->> 7, \
         v ->> 8, v ->> 9, v ->> 10, v ->> 11, v ->> 12 FROM r ORDER BY k \
         RETURNING position, event_id",
    )
    .bind(Value::Array(events).to_string())
    .fetch_all(&mut **tx)
    .await?;
    for row in &written {
        let event_id: String = row.try_get("event_id")?;
        let position: i64 = row.try_get("position")?;
        places.insert(event_id, position);
    }
    Ok(places)
}

/// Each append's result after the commit: the decided ones as decided, the written ones with
/// the positions of their events.
fn answer(
    outcomes: Outcomes,
    rows: Vec<Vec<RecordedEvent>>,
    places: &HashMap<String, i64>,
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut results = Vec::with_capacity(outcomes.len());
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

fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn json_list(items: &[impl serde::Serialize]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| StoreError::Corrupt(format!("a JSON list: {e}")))
}
