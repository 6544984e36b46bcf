//! The counters of the `requests` projection's figures (table `request_tallies`, ADR 37) on
//! both backends: moved in the transaction that writes the rows, read by figure, filled from
//! the rows once after the migration that made them.

use lethe_projections::tallies::Tallies;
use sqlx::{Postgres, Row, Sqlite, Transaction};

use super::{decode, Tally, TallyKey, BACKFILL_PAGE, TALLIES_BACKFILL};
use crate::store::StoreError;

/// Adds the batch's changes to the counters.
pub(super) async fn write_sqlite(
    tx: &mut Transaction<'_, Sqlite>,
    tallies: &Tallies,
) -> Result<(), StoreError> {
    for (key, tally) in tallies.changes() {
        sqlx::query(
            "INSERT INTO request_tallies (figure, key, bucket, count, total) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (figure, key, bucket) DO UPDATE \
             SET count = count + excluded.count, total = total + excluded.total",
        )
        .bind(&key.figure)
        .bind(&key.key)
        .bind(key.bucket)
        .bind(tally.count)
        .bind(tally.sum)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Adds the batch's changes to the counters, in one statement.
pub(super) async fn write_postgres(
    tx: &mut Transaction<'_, Postgres>,
    tallies: &Tallies,
) -> Result<(), StoreError> {
    let (mut figures, mut keys, mut buckets, mut counts, mut sums) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, tally) in tallies.changes() {
        figures.push(key.figure.as_str());
        keys.push(key.key.as_str());
        buckets.push(key.bucket);
        counts.push(tally.count);
        sums.push(tally.sum);
    }
    if figures.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO request_tallies (figure, key, bucket, count, total) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
         ON CONFLICT (figure, key, bucket) DO UPDATE \
         SET count = request_tallies.count + excluded.count, \
         total = request_tallies.total + excluded.total",
    )
    .bind(&figures)
    .bind(&keys)
    .bind(&buckets)
    .bind(&counts)
    .bind(&sums)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One counter as read.
pub(super) fn tally<'r, R: Row>(row: &'r R) -> Result<(TallyKey, Tally), StoreError>
where
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok((
        TallyKey {
            figure: row.try_get("figure")?,
            key: row.try_get("key")?,
            bucket: row.try_get("bucket")?,
        },
        Tally {
            count: row.try_get("count")?,
            sum: row.try_get("total")?,
        },
    ))
}

/// What every row contributes, read page by page with `sql` (the rows after an id, in id
/// order, at most a page) from `start`, an id below all.
async fn of_every_row<'c, DB, K>(
    tx: &mut Transaction<'c, DB>,
    sql: &'static str,
    start: K,
) -> Result<Tallies, StoreError>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    K: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB> + Send,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    &'static str: sqlx::ColumnIndex<DB::Row>,
    StoreError: From<sqlx::Error>,
{
    let mut tallies = Tallies::default();
    let mut after = start;
    loop {
        let rows = sqlx::query(sql)
            .bind(after)
            .bind(BACKFILL_PAGE)
            .fetch_all(&mut **tx)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("request_id")?;
        for row in &rows {
            let data: String = row.try_get("row_data")?;
            tallies.add(&decode(&data)?);
        }
    }
    Ok(tallies)
}

/// The counters recomputed from every row, when the migration's mark asks for it (SQLite: the
/// one writer holds everything else off).
pub(super) async fn backfill_sqlite(tx: &mut Transaction<'_, Sqlite>) -> Result<bool, StoreError> {
    let marked = sqlx::query("DELETE FROM projection_backfills WHERE name = ?1")
        .bind(TALLIES_BACKFILL)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        > 0;
    if !marked {
        return Ok(false);
    }
    let tallies = of_every_row(
        tx,
        "SELECT request_id, row_data FROM requests_projection WHERE request_id > ?1 \
         ORDER BY request_id LIMIT ?2",
        String::new(),
    )
    .await?;
    sqlx::query("DELETE FROM request_tallies")
        .execute(&mut **tx)
        .await?;
    write_sqlite(tx, &tallies).await?;
    Ok(true)
}

/// The counters recomputed from every row, when the migration's mark asks for it, with the
/// `requests` subscription's row locked so that no projection batch commits meanwhile.
pub(super) async fn backfill_postgres(
    tx: &mut Transaction<'_, Postgres>,
) -> Result<bool, StoreError> {
    sqlx::query("SELECT 1 FROM subscriptions WHERE name = $1 FOR UPDATE")
        .bind(super::REQUESTS)
        .fetch_all(&mut **tx)
        .await?;
    let marked = sqlx::query("DELETE FROM projection_backfills WHERE name = $1")
        .bind(TALLIES_BACKFILL)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        > 0;
    if !marked {
        return Ok(false);
    }
    let tallies = of_every_row(
        tx,
        "SELECT request_id, row_data FROM requests_projection WHERE request_id > $1 \
         ORDER BY request_id LIMIT $2",
        uuid::Uuid::nil(),
    )
    .await?;
    sqlx::query("DELETE FROM request_tallies")
        .execute(&mut **tx)
        .await?;
    write_postgres(tx, &tallies).await?;
    Ok(true)
}
