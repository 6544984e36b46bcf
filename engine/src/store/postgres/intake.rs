//! Intake on Postgres: a batch whose appends all start new streams and carry no command id
//! is written by one statement.

use std::sync::LazyLock;

use sqlx::PgPool;

use super::columns::{
    place_written, rows_to_write, unnest_events, EventColumns, KeyColumns, EVENT_INSERT_COLUMNS,
};
use super::outcome::{count, Outcome};
use super::read::stream_version;
use crate::store::{prepare_rows, Append, Appended, StoreError, GENESIS_HASH};

/// A batch whose appends all start new streams and carry no command id (submissions without
/// an idempotency key or external id, bulk intake): one statement, run as its own
/// transaction, creates the streams, writes the events of those it created and their keys
/// and blind indexes. One round trip and one commit, where the general path takes six. An
/// append whose stream exists already is a conflict, as on the general path.
pub(super) async fn try_new_streams(
    pool: &PgPool,
    appends: &[Append],
    mut outcomes: Vec<Outcome>,
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH created AS ( \
               INSERT INTO streams (stream_id, version, last_hash) \
               SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[]) ORDER BY 1 \
               ON CONFLICT (stream_id) DO NOTHING RETURNING stream_id), \
             written AS ( \
               INSERT INTO events ({EVENT_INSERT_COLUMNS}) \
               SELECT {EVENT_INSERT_COLUMNS} FROM {} \
               WHERE t.stream_id IN (SELECT stream_id FROM created) ORDER BY ordinal \
               RETURNING event_id, position, transaction_id::text::bigint AS transaction_id), \
             keys AS ( \
               INSERT INTO request_keys (request_id, wrapped_key) \
               SELECT k.request_id, k.wrapped_key \
               FROM unnest($17::uuid[], $18::text[]) AS k(request_id, wrapped_key) \
               WHERE k.request_id IN (SELECT stream_id FROM created)), \
             indexes AS ( \
               INSERT INTO subject_index (blind_index, request_id) \
               SELECT i.blind_index, i.request_id \
               FROM unnest($19::text[], $20::uuid[]) AS i(blind_index, request_id) \
               WHERE i.request_id IN (SELECT stream_id FROM created) ON CONFLICT DO NOTHING) \
             SELECT event_id, position, transaction_id FROM written",
            unnest_events(4)
        )
    });
    let new: Vec<usize> = (0..appends.len())
        .filter(|&i| !matches!(outcomes[i], Outcome::Empty))
        .collect();
    let streams = start_streams(appends, &new, &mut outcomes);
    let written = {
        let keys = KeyColumns::new(appends, &outcomes);
        let rows = rows_to_write(&outcomes);
        let columns = EventColumns::new(&rows);
        let query = sqlx::query(&SQL)
            .bind(&streams.ids)
            .bind(&streams.versions)
            .bind(&streams.hashes);
        columns
            .bind(query)
            .bind(&keys.key_ids)
            .bind(&keys.keys)
            .bind(&keys.indexes)
            .bind(&keys.index_ids)
            .fetch_all(pool)
            .await?
    };
    place_written(&mut outcomes, &written, true)?;
    let mut results = Vec::with_capacity(appends.len());
    for (append, outcome) in appends.iter().zip(outcomes) {
        results.push(match outcome {
            Outcome::Write(rows) => Ok(Appended::Written(rows)),
            Outcome::Conflict(_) => Err(StoreError::Conflict {
                stream_id: append.stream_id,
                expected: 0,
                actual: stream_version(pool, append.stream_id).await?,
            }),
            Outcome::Empty => Ok(Appended::Written(Vec::new())),
            Outcome::Duplicate(command_id) => Err(StoreError::Corrupt(format!(
                "command {command_id} in a batch of new streams without command ids"
            ))),
        });
    }
    Ok(results)
}

/// The `streams` rows of new streams, as the arrays `unnest` takes.
pub(super) struct StreamColumns {
    pub(super) ids: Vec<uuid::Uuid>,
    pub(super) versions: Vec<i64>,
    pub(super) hashes: Vec<String>,
}

/// Chains the events of the appends at `which` from the genesis hash (each becomes
/// `Outcome::Write`) and returns their streams' rows.
pub(super) fn start_streams(
    appends: &[Append],
    which: &[usize],
    outcomes: &mut [Outcome],
) -> StreamColumns {
    let mut streams = StreamColumns {
        ids: Vec::with_capacity(which.len()),
        versions: Vec::with_capacity(which.len()),
        hashes: Vec::with_capacity(which.len()),
    };
    for &i in which {
        let a = &appends[i];
        let rows = prepare_rows(a.stream_id, 0, GENESIS_HASH, &a.events, &a.metadata);
        streams.ids.push(*a.stream_id.as_uuid());
        streams.versions.push(count(&a.events));
        streams
            .hashes
            .push(rows.last().map(|r| r.hash.clone()).unwrap_or_default());
        outcomes[i] = Outcome::Write(rows);
    }
    streams
}
