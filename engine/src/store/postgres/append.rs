//! Writing a batch of appends on Postgres in one transaction: claim the command ids, advance
//! the existing streams, create the new ones, write the events and the keys, in that order
//! (the fast path for batches of new streams alone is [`super::intake`]).

use std::collections::{HashMap, HashSet};

use sqlx::{PgPool, Postgres, Row, Transaction};

use super::columns::{insert_events, insert_keys};
use super::intake::{start_streams, try_new_streams};
use super::outcome::{count, Outcome};
use super::read::{find_command, stream_version};
use crate::store::group::{self, WriteBatch};
use crate::store::{prepare_rows, Append, Appended, StoreError};

pub(super) fn batch_writer(pool: PgPool) -> WriteBatch {
    std::sync::Arc::new(move |appends| {
        let pool = pool.clone();
        Box::pin(async move { write_batch(&pool, appends).await })
    })
}

/// Writes a batch of appends to distinct streams with distinct command ids in one
/// transaction (see [`group::with_fallback`] for when that transaction fails).
async fn write_batch(pool: &PgPool, appends: Vec<Append>) -> Vec<Result<Appended, StoreError>> {
    group::with_fallback(&appends, |some| try_batch(pool, some)).await
}

type Tx<'c> = Transaction<'c, Postgres>;

async fn try_batch(
    pool: &PgPool,
    appends: &[Append],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut outcomes: Vec<Outcome> = appends
        .iter()
        .map(|a| {
            if a.events.is_empty() {
                Outcome::Empty
            } else {
                Outcome::Write(Vec::new())
            }
        })
        .collect();
    if outcomes.iter().all(|o| matches!(o, Outcome::Empty)) {
        return Ok(appends
            .iter()
            .map(|_| Ok(Appended::Written(Vec::new())))
            .collect());
    }
    if appends.iter().all(|a| {
        a.events.is_empty() || (a.expected_version == 0 && a.metadata.command_id.is_none())
    }) {
        return try_new_streams(pool, appends, outcomes).await;
    }
    let mut tx = pool.begin().await?;
    // 1. Claim the command ids. A taken id blocks while its transaction runs, then is skipped.
    claim_commands(&mut tx, appends, &mut outcomes).await?;
    // 2. Lock the heads of existing streams, check their versions, chain the new events.
    advance_streams(&mut tx, appends, &mut outcomes).await?;
    // 3. Create the new streams; one that exists already is a conflict.
    create_streams(&mut tx, appends, &mut outcomes).await?;
    // 4. Give back the command ids of the appends that conflicted.
    release_commands(&mut tx, appends, &outcomes).await?;
    // 5. The events, in one statement, in batch order (positions follow versions).
    insert_events(&mut tx, &mut outcomes).await?;
    // 6. The data keys and blind indexes of new requests.
    insert_keys(&mut tx, appends, &outcomes).await?;
    tx.commit().await?;
    answer(pool, appends, outcomes).await
}

/// Claims the command ids of the appends to write; an append whose id was taken becomes a
/// duplicate.
async fn claim_commands(
    tx: &mut Tx<'_>,
    appends: &[Append],
    outcomes: &mut [Outcome],
) -> Result<(), StoreError> {
    let claims: Vec<usize> = (0..appends.len())
        .filter(|&i| {
            matches!(outcomes[i], Outcome::Write(_)) && appends[i].metadata.command_id.is_some()
        })
        .collect();
    if claims.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(claims.len());
    let mut streams = Vec::with_capacity(claims.len());
    let mut firsts = Vec::with_capacity(claims.len());
    let mut lasts = Vec::with_capacity(claims.len());
    for &i in &claims {
        let a = &appends[i];
        ids.push(a.metadata.command_id.clone().unwrap_or_default());
        streams.push(*a.stream_id.as_uuid());
        firsts.push(a.expected_version + 1);
        lasts.push(a.expected_version + count(&a.events));
    }
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO commands (command_id, stream_id, first_version, last_version) \
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::int8[], $4::int8[]) ORDER BY 1 \
         ON CONFLICT (command_id) DO NOTHING RETURNING command_id",
    )
    .bind(&ids)
    .bind(&streams)
    .bind(&firsts)
    .bind(&lasts)
    .fetch_all(&mut **tx)
    .await?;
    let claimed: HashSet<String> = claimed.into_iter().collect();
    for (&i, id) in claims.iter().zip(ids) {
        if !claimed.contains(&id) {
            outcomes[i] = Outcome::Duplicate(id);
        }
    }
    Ok(())
}

/// Locks the heads of the existing streams appended to (in id order, so batches cannot
/// deadlock on them) and checks their versions; chains the new events onto their last hashes
/// and moves the heads. An append to a stream not at its expected version is a conflict.
async fn advance_streams(
    tx: &mut Tx<'_>,
    appends: &[Append],
    outcomes: &mut [Outcome],
) -> Result<(), StoreError> {
    let existing: Vec<usize> = (0..appends.len())
        .filter(|&i| matches!(outcomes[i], Outcome::Write(_)) && appends[i].expected_version > 0)
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = existing
        .iter()
        .map(|&i| *appends[i].stream_id.as_uuid())
        .collect();
    let rows = sqlx::query(
        "SELECT stream_id, version, last_hash FROM streams WHERE stream_id = ANY($1) \
         ORDER BY stream_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut heads = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: uuid::Uuid = row.try_get("stream_id")?;
        let version: i64 = row.try_get("version")?;
        let hash: String = row.try_get("last_hash")?;
        heads.insert(id, (version, hash));
    }
    let (mut ids, mut versions, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
    for &i in &existing {
        let a = &appends[i];
        match heads.get(a.stream_id.as_uuid()) {
            Some((version, hash)) if *version == a.expected_version => {
                let rows = prepare_rows(
                    a.stream_id,
                    a.expected_version,
                    hash,
                    &a.events,
                    &a.metadata,
                );
                ids.push(*a.stream_id.as_uuid());
                versions.push(a.expected_version + count(&a.events));
                hashes.push(rows.last().map(|r| r.hash.clone()).unwrap_or_default());
                outcomes[i] = Outcome::Write(rows);
            }
            other => outcomes[i] = Outcome::Conflict(Some(other.map_or(0, |(v, _)| *v))),
        }
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE streams SET version = u.version, last_hash = u.last_hash \
             FROM unnest($1::uuid[], $2::int8[], $3::text[]) AS u(stream_id, version, last_hash) \
             WHERE streams.stream_id = u.stream_id",
        )
        .bind(&ids)
        .bind(&versions)
        .bind(&hashes)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Creates the streams of the appends that start one; one that exists already is a conflict.
async fn create_streams(
    tx: &mut Tx<'_>,
    appends: &[Append],
    outcomes: &mut [Outcome],
) -> Result<(), StoreError> {
    let fresh: Vec<usize> = (0..appends.len())
        .filter(|&i| matches!(outcomes[i], Outcome::Write(_)) && appends[i].expected_version == 0)
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let streams = start_streams(appends, &fresh, outcomes);
    let created: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO streams (stream_id, version, last_hash) \
         SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[]) ORDER BY 1 \
         ON CONFLICT (stream_id) DO NOTHING RETURNING stream_id",
    )
    .bind(&streams.ids)
    .bind(&streams.versions)
    .bind(&streams.hashes)
    .fetch_all(&mut **tx)
    .await?;
    let created: HashSet<uuid::Uuid> = created.into_iter().collect();
    for &i in &fresh {
        if !created.contains(appends[i].stream_id.as_uuid()) {
            outcomes[i] = Outcome::Conflict(None);
        }
    }
    Ok(())
}

/// Gives back the command ids of the appends that conflicted.
async fn release_commands(
    tx: &mut Tx<'_>,
    appends: &[Append],
    outcomes: &[Outcome],
) -> Result<(), StoreError> {
    let released: Vec<String> = (0..appends.len())
        .filter(|&i| matches!(outcomes[i], Outcome::Conflict(_)))
        .filter_map(|i| appends[i].metadata.command_id.clone())
        .collect();
    if !released.is_empty() {
        sqlx::query("DELETE FROM commands WHERE command_id = ANY($1)")
            .bind(&released)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Each append's result once the batch has committed: a duplicate gets its command's first
/// result, a conflict the stream's version.
async fn answer(
    pool: &PgPool,
    appends: &[Append],
    outcomes: Vec<Outcome>,
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut results = Vec::with_capacity(appends.len());
    for (append, outcome) in appends.iter().zip(outcomes) {
        results.push(match outcome {
            Outcome::Empty => Ok(Appended::Written(Vec::new())),
            Outcome::Write(rows) => Ok(Appended::Written(rows)),
            Outcome::Duplicate(command_id) => match find_command(pool, &command_id).await? {
                Some(record) => Ok(Appended::Duplicate(record)),
                None => Err(StoreError::Corrupt(format!(
                    "command {command_id} vanished while being checked"
                ))),
            },
            Outcome::Conflict(actual) => {
                let actual = match actual {
                    Some(actual) => actual,
                    None => stream_version(pool, append.stream_id).await?,
                };
                Err(StoreError::Conflict {
                    stream_id: append.stream_id,
                    expected: append.expected_version,
                    actual,
                })
            }
        });
    }
    Ok(results)
}
