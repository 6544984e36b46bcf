//! The projections on Postgres.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::RequestId;
use lethe_projections::requests::RequestRow;
use sqlx::{QueryBuilder, Row};

use super::suppressions::{changes, SuppressionChange, SuppressionEntry};
use super::{
    decode, encode, fold_counted, tallies, ProjectionStore, RequestFilter, Tally, TallyKey,
    REQUESTS,
};
use crate::store::{Checkpoint, PostgresStore, RecordedEvent, StoreError};
use crate::subscriptions;

#[async_trait]
impl ProjectionStore for PostgresStore {
    async fn commit_requests(
        &self,
        owner: &str,
        checkpoint: Checkpoint,
        events: &[RecordedEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let owned =
            subscriptions::postgres::commit_checkpoint(&mut tx, REQUESTS, owner, checkpoint)
                .await?;
        if !owned {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut ids: Vec<uuid::Uuid> = events.iter().map(|e| *e.stream_id.as_uuid()).collect();
        ids.sort_unstable();
        ids.dedup();
        let existing =
            sqlx::query("SELECT row_data FROM requests_projection WHERE request_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        let mut rows = HashMap::new();
        for record in &existing {
            let row = decode(record.try_get("row_data")?)?;
            rows.insert(row.id, row);
        }
        // One multi-row upsert for the whole batch.
        let (folded, counted) = fold_counted(rows, events)?;
        let n = folded.len();
        let (mut ids, mut statuses, mut jurisdictions, mut received) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut deadlines, mut closed, mut data) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for row in folded.values() {
            ids.push(*row.id.as_uuid());
            statuses.push(row.status.as_str());
            jurisdictions.push(row.jurisdiction.as_str());
            received.push(row.received_at);
            deadlines.push(row.deadline);
            closed.push(row.closed_at);
            data.push(encode(row)?);
        }
        sqlx::query(
            "INSERT INTO requests_projection (request_id, status, jurisdiction, received_at, deadline, \
             closed_at, row_data) \
             SELECT request_id, status, jurisdiction, received_at, deadline, closed_at, \
             row_data FROM unnest($1::uuid[], $2::text[], $3::text[], \
             $4::timestamptz[], $5::date[], $6::timestamptz[], $7::text[]) \
             AS t(request_id, status, jurisdiction, received_at, deadline, closed_at, row_data) \
             ORDER BY request_id \
             ON CONFLICT (request_id) DO UPDATE SET status = excluded.status, \
             jurisdiction = excluded.jurisdiction, received_at = excluded.received_at, \
             deadline = excluded.deadline, closed_at = excluded.closed_at, \
             row_data = excluded.row_data",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&jurisdictions)
        .bind(&received)
        .bind(&deadlines)
        .bind(&closed)
        .bind(&data)
        .execute(&mut *tx)
        .await?;
        unfinished_cleaners(&mut tx, folded.values()).await?;
        tallies::write_postgres(&mut tx, &counted).await?;
        apply_suppressions(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn find_suppressions(
        &self,
        hashes: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<SuppressionEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT hash, request_id, suppressed_at, expires_at FROM suppressions \
             WHERE hash = ANY($1) AND (expires_at IS NULL OR expires_at > $2) \
             ORDER BY request_id, hash",
        )
        .bind(hashes)
        .bind(at)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SuppressionEntry {
                    hash: r.try_get("hash")?,
                    request_id: RequestId::from_uuid(r.try_get("request_id")?),
                    suppressed_at: r.try_get("suppressed_at")?,
                    expires_at: r.try_get("expires_at")?,
                })
            })
            .collect()
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let mut query = list_query("", filter, after, limit);
        let records = query.build().fetch_all(self.pool()).await?;
        records
            .iter()
            .map(|r| decode(r.try_get("row_data")?))
            .collect()
    }

    async fn tallies(&self, figures: &[String]) -> Result<Vec<(TallyKey, Tally)>, StoreError> {
        let rows = sqlx::query(
            "SELECT figure, key, bucket, count, total FROM request_tallies \
             WHERE figure = ANY($1) AND (count <> 0 OR total <> 0)",
        )
        .bind(figures)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(tallies::tally).collect()
    }

    async fn count_open(
        &self,
        from: Option<NaiveDate>,
        until: Option<NaiveDate>,
    ) -> Result<u64, StoreError> {
        let mut query = super::open_query("COUNT(*)", from, until, &ENCODERS);
        let count: i64 = query.build_query_scalar().fetch_one(self.pool()).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn most_urgent(
        &self,
        from: Option<NaiveDate>,
        until: Option<NaiveDate>,
        limit: u32,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let mut query = super::open_query("row_data", from, until, &ENCODERS);
        query
            .push(" ORDER BY deadline, received_at, request_id LIMIT ")
            .push_bind(i64::from(limit));
        let records = query.build().fetch_all(self.pool()).await?;
        records
            .iter()
            .map(|r| decode(r.try_get("row_data")?))
            .collect()
    }

    async fn explain_list(&self, filter: &RequestFilter) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool().begin().await?;
        // A small table is best read whole; without that choice, the plan a large one gets.
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        let mut query = list_query("EXPLAIN ", filter, None, 50);
        let rows = query.build().fetch_all(&mut *tx).await?;
        tx.rollback().await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    async fn backfill_tallies(&self) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = tallies::backfill_postgres(&mut tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn reset(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        if name == REQUESTS {
            sqlx::query("DELETE FROM requests_projection")
                .execute(&mut *tx)
                .await?;
            for table in ["suppressions", "unfinished_cleaners", "request_tallies"] {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        subscriptions::postgres::restart_checkpoint(&mut tx, name, owner).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// How the list binds ids, dates and times.
const ENCODERS: super::Encoders<uuid::Uuid, NaiveDate, DateTime<Utc>> = super::Encoders {
    id: |id| *id.as_uuid(),
    date: |date| date,
    time: |at| at,
};

/// The list's query on this backend.
fn list_query(
    prefix: &str,
    filter: &RequestFilter,
    after: Option<RequestId>,
    limit: u32,
) -> QueryBuilder<'static, sqlx::Postgres> {
    super::list_query(prefix, filter, after, limit, ("JOIN", ""), &ENCODERS)
}

/// Replaces the batch's requests' rows in `unfinished_cleaners` by their cleaners not yet done.
async fn unfinished_cleaners(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: impl Iterator<Item = &RequestRow>,
) -> Result<(), StoreError> {
    // A plan is set once, when the request becomes due: no cleaners, no rows before either.
    let (mut touched, mut cleaners, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows.filter(|row| !row.cleaners.is_empty()) {
        touched.push(*row.id.as_uuid());
        for cleaner in row.unfinished_cleaners() {
            cleaners.push(cleaner.to_owned());
            ids.push(*row.id.as_uuid());
        }
    }
    if touched.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM unfinished_cleaners WHERE request_id = ANY($1)")
        .bind(&touched)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO unfinished_cleaners (cleaner, request_id) \
         SELECT * FROM unnest($1::text[], $2::uuid[]) ON CONFLICT DO NOTHING",
    )
    .bind(&cleaners)
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The batch's suppression changes, in log order.
async fn apply_suppressions(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    for change in changes(events)? {
        match change {
            SuppressionChange::Add(entries) => {
                for entry in entries {
                    sqlx::query(
                        "INSERT INTO suppressions (hash, request_id, suppressed_at, expires_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (hash, request_id) DO NOTHING",
                    )
                    .bind(&entry.hash)
                    .bind(entry.request_id.as_uuid())
                    .bind(entry.suppressed_at)
                    .bind(entry.expires_at)
                    .execute(&mut **tx)
                    .await?;
                }
            }
            SuppressionChange::Lift(id) => {
                sqlx::query("DELETE FROM suppressions WHERE request_id = $1")
                    .bind(id.as_uuid())
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}
