//! The columns of a Postgres batch insert, bound as arrays and `unnest`ed: one statement
//! writes every event (or key, or blind index) of a batch.

use std::sync::LazyLock;

use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

use super::outcome::Outcome;
use crate::store::{Append, RecordedEvent, StoreError};

/// The columns of events to insert, as the arrays `unnest` takes.
pub(super) struct EventColumns<'a> {
    stream_ids: Vec<uuid::Uuid>,
    versions: Vec<i64>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    /// The payloads as JSON text (the column is `text`: ADR 12).
    payloads: Vec<String>,
    event_ids: Vec<uuid::Uuid>,
    command_ids: Vec<Option<&'a str>>,
    correlation_ids: Vec<uuid::Uuid>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    actors: Vec<&'a str>,
    recorded_ats: Vec<chrono::DateTime<chrono::Utc>>,
    prev_hashes: Vec<&'a str>,
    hashes: Vec<&'a str>,
}

/// `unnest` of [`EventColumns`] bound from `$first`, in batch order, as `t(<columns>, ordinal)`.
pub(super) fn unnest_events(first: usize) -> String {
    let types = [
        "uuid",
        "int8",
        "text",
        "int4",
        "text",
        "uuid",
        "text",
        "uuid",
        "uuid",
        "text",
        "timestamptz",
        "text",
        "text",
    ];
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!(
        "unnest({}) WITH ORDINALITY AS t(stream_id, version, event_type, schema_version, \
         payload, event_id, command_id, correlation_id, causation_id, actor, recorded_at, \
         prev_hash, hash, ordinal)",
        arrays.join(", ")
    )
}

pub(super) const EVENT_INSERT_COLUMNS: &str =
    "stream_id, version, event_type, schema_version, payload, \
     event_id, command_id, correlation_id, causation_id, actor, recorded_at, prev_hash, hash";

impl<'a> EventColumns<'a> {
    pub(super) fn new(rows: &[&'a RecordedEvent]) -> Self {
        let n = rows.len();
        let mut columns = Self {
            stream_ids: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            command_ids: Vec::with_capacity(n),
            correlation_ids: Vec::with_capacity(n),
            causation_ids: Vec::with_capacity(n),
            actors: Vec::with_capacity(n),
            recorded_ats: Vec::with_capacity(n),
            prev_hashes: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
        };
        for row in rows {
            columns.stream_ids.push(*row.stream_id.as_uuid());
            columns.versions.push(row.version);
            columns.types.push(row.event_type.as_str());
            columns.schema_versions.push(row.schema_version);
            columns.payloads.push(row.payload.to_string());
            columns.event_ids.push(row.event_id);
            columns.command_ids.push(row.command_id.as_deref());
            columns.correlation_ids.push(row.correlation_id);
            columns.causation_ids.push(row.causation_id);
            columns.actors.push(row.actor.as_str());
            columns.recorded_ats.push(row.recorded_at);
            columns.prev_hashes.push(row.prev_hash.as_str());
            columns.hashes.push(row.hash.as_str());
        }
        columns
    }

    /// Binds the thirteen arrays, in [`unnest_events`] order.
    pub(super) fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.stream_ids)
            .bind(&self.versions)
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.event_ids)
            .bind(&self.command_ids)
            .bind(&self.correlation_ids)
            .bind(&self.causation_ids)
            .bind(&self.actors)
            .bind(&self.recorded_ats)
            .bind(&self.prev_hashes)
            .bind(&self.hashes)
    }
}

/// The rows to be written, in batch order.
pub(super) fn rows_to_write(outcomes: &[Outcome]) -> Vec<&RecordedEvent> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Write(rows) => Some(rows.iter()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Fills in the positions and transaction ids that the insert returned (`event_id`,
/// `position`, `transaction_id`). An event that did not come back is an error, unless
/// `missing_is_conflict` and none of its append's events came back: then its stream existed
/// already, and the append is a conflict.
pub(super) fn place_written(
    outcomes: &mut [Outcome],
    written: &[PgRow],
    missing_is_conflict: bool,
) -> Result<(), StoreError> {
    let mut places = std::collections::HashMap::with_capacity(written.len());
    for row in written {
        let event_id: uuid::Uuid = row.try_get("event_id")?;
        let position: i64 = row.try_get("position")?;
        let transaction_id: i64 = row.try_get("transaction_id")?;
        places.insert(event_id, (position, transaction_id));
    }
    for outcome in outcomes.iter_mut() {
        let Outcome::Write(rows) = outcome else {
            continue;
        };
        if let (true, Some(first)) = (missing_is_conflict, rows.first()) {
            if !places.contains_key(&first.event_id) {
                *outcome = Outcome::Conflict(None);
                continue;
            }
        }
        for row in rows {
            let (position, transaction_id) =
                places.get(&row.event_id).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!("event {} was not written", row.event_id))
                })?;
            row.position = position;
            row.transaction_id = transaction_id;
        }
    }
    Ok(())
}

pub(super) async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    outcomes: &mut [Outcome],
) -> Result<(), StoreError> {
    let rows = rows_to_write(outcomes);
    if rows.is_empty() {
        return Ok(());
    }
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO events ({EVENT_INSERT_COLUMNS}) SELECT {EVENT_INSERT_COLUMNS} FROM {} \
             ORDER BY ordinal \
             RETURNING event_id, position, transaction_id::text::bigint AS transaction_id",
            unnest_events(1)
        )
    });
    let columns = EventColumns::new(&rows);
    let written = columns.bind(sqlx::query(&SQL)).fetch_all(&mut **tx).await?;
    drop(columns);
    place_written(outcomes, &written, false)
}

/// The data keys and blind indexes of the appends being written, as the arrays `unnest` takes.
pub(super) struct KeyColumns<'a> {
    pub(super) key_ids: Vec<uuid::Uuid>,
    pub(super) keys: Vec<&'a str>,
    pub(super) index_ids: Vec<uuid::Uuid>,
    pub(super) indexes: Vec<&'a str>,
}

impl<'a> KeyColumns<'a> {
    pub(super) fn new(appends: &'a [Append], outcomes: &[Outcome]) -> Self {
        let mut columns = Self {
            key_ids: Vec::new(),
            keys: Vec::new(),
            index_ids: Vec::new(),
            indexes: Vec::new(),
        };
        for (append, outcome) in appends.iter().zip(outcomes) {
            if let (Some(key), Outcome::Write(_)) = (&append.key, outcome) {
                columns.key_ids.push(*append.stream_id.as_uuid());
                columns.keys.push(key.wrapped_key.as_str());
                for index in &key.indexes {
                    columns.index_ids.push(*append.stream_id.as_uuid());
                    columns.indexes.push(index.as_str());
                }
            }
        }
        columns
    }
}

pub(super) async fn insert_keys(
    tx: &mut Transaction<'_, Postgres>,
    appends: &[Append],
    outcomes: &[Outcome],
) -> Result<(), StoreError> {
    let KeyColumns {
        key_ids,
        keys,
        index_ids,
        indexes,
    } = KeyColumns::new(appends, outcomes);
    if !key_ids.is_empty() {
        sqlx::query(
            "INSERT INTO request_keys (request_id, wrapped_key) \
             SELECT * FROM unnest($1::uuid[], $2::text[])",
        )
        .bind(&key_ids)
        .bind(&keys)
        .execute(&mut **tx)
        .await?;
    }
    if !index_ids.is_empty() {
        sqlx::query(
            "INSERT INTO subject_index (blind_index, request_id) \
             SELECT * FROM unnest($1::text[], $2::uuid[]) ON CONFLICT DO NOTHING",
        )
        .bind(&indexes)
        .bind(&index_ids)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
