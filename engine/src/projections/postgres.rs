//! The projections on Postgres.

use std::collections::HashMap;

use async_trait::async_trait;
use lethe_domain::RequestId;
use lethe_projections::requests::RequestRow;
use sqlx::{QueryBuilder, Row};

use super::{decode, encode, fold_batch, ProjectionStore, RequestFilter, REQUESTS};
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
        tx.commit().await?;
        Ok(true)
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let today = filter
            .today
            .unwrap_or_else(|| chrono::Utc::now().date_naive());
        let mut query = QueryBuilder::new("SELECT row_data FROM requests_projection WHERE true");
        if let Some(after) = after {
            query.push(" AND request_id > ").push_bind(*after.as_uuid());
        }
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if filter.needs_attention {
            query.push(" AND status = 'needs_attention'");
        }
        if let Some(jurisdiction) = &filter.jurisdiction {
            query
                .push(" AND jurisdiction = ")
                .push_bind(jurisdiction.clone());
        }
        if filter.at_risk {
            query
                .push(" AND closed_at IS NULL AND deadline >= ")
                .push_bind(today)
                .push(" AND deadline <= ")
                .push_bind(today + chrono::TimeDelta::days(filter.at_risk_days));
        }
        if filter.overdue {
            query
                .push(" AND closed_at IS NULL AND deadline < ")
                .push_bind(today);
        }
        if let Some(from) = filter.received_from {
            query.push(" AND received_at >= ").push_bind(from);
        }
        if let Some(to) = filter.received_to {
            query.push(" AND received_at < ").push_bind(to);
        }
        query
            .push(" ORDER BY request_id LIMIT ")
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
        }
        subscriptions::postgres::restart_checkpoint(&mut tx, name, owner).await?;
        tx.commit().await?;
        Ok(())
    }
}
