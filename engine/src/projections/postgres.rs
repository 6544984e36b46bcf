//! The projections on Postgres.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::RequestId;
use lethe_projections::requests::RequestRow;
use sqlx::{QueryBuilder, Row};

use super::suppressions::{changes, SuppressionChange, SuppressionEntry};
use super::{decode, encode, fold_batch, list_source, ProjectionStore, RequestFilter, REQUESTS};
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
        let folded = fold_batch(rows, events)?;
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
        let today = filter.today.unwrap_or_else(|| Utc::now().date_naive());
        let mut query = QueryBuilder::new("SELECT p.row_data FROM ");
        let key = list_source(&mut query, filter, "JOIN");
        if let Some(after) = after {
            query
                .push(format!(" AND {key} > "))
                .push_bind(*after.as_uuid());
        }
        if let Some(status) = filter.status {
            query.push(" AND p.status = ").push_bind(status.as_str());
        }
        if filter.needs_attention {
            query.push(" AND p.status = 'needs_attention'");
        }
        if let Some(jurisdiction) = &filter.jurisdiction {
            query
                .push(" AND p.jurisdiction = ")
                .push_bind(jurisdiction.clone());
        }
        if filter.at_risk {
            query
                .push(" AND p.closed_at IS NULL AND p.deadline >= ")
                .push_bind(today)
                .push(" AND p.deadline <= ")
                .push_bind(today + chrono::TimeDelta::days(filter.at_risk_days));
        }
        if filter.overdue {
            query
                .push(" AND p.closed_at IS NULL AND p.deadline < ")
                .push_bind(today);
        }
        if let Some(from) = filter.received_from {
            query.push(" AND p.received_at >= ").push_bind(from);
        }
        if let Some(to) = filter.received_to {
            query.push(" AND p.received_at < ").push_bind(to);
        }
        query
            .push(format!(" ORDER BY {key} LIMIT "))
            .push_bind(i64::from(limit));
        let records = query.build().fetch_all(self.pool()).await?;
        records
            .iter()
            .map(|r| decode(r.try_get("row_data")?))
            .collect()
    }

    async fn reset(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        if name == REQUESTS {
            sqlx::query("DELETE FROM requests_projection")
                .execute(&mut *tx)
                .await?;
            for table in ["suppressions", "unfinished_cleaners"] {
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
