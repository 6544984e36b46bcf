//! The projections on SQLite.

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
use crate::store::{Checkpoint, RecordedEvent, SqliteStore, StoreError};
use crate::subscriptions;

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[async_trait]
impl ProjectionStore for SqliteStore {
    async fn commit_requests(
        &self,
        owner: &str,
        checkpoint: Checkpoint,
        events: &[RecordedEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        let owned =
            subscriptions::sqlite::commit_checkpoint(&mut tx, REQUESTS, owner, checkpoint).await?;
        if !owned {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut ids: Vec<String> = events.iter().map(|e| e.stream_id.to_string()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut rows = HashMap::new();
        for chunk in ids.chunks(500) {
            let mut query =
                QueryBuilder::new("SELECT row_data FROM requests_projection WHERE request_id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id.clone());
            }
            query.push(")");
            for record in query.build().fetch_all(&mut *tx).await? {
                let row = decode(record.try_get("row_data")?)?;
                rows.insert(row.id, row);
            }
        }
        let (folded, counted) = fold_counted(rows, events)?;
        for row in folded.values() {
            sqlx::query(
                "INSERT INTO requests_projection (request_id, status, jurisdiction, received_at, deadline, \
                 closed_at, row_data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (request_id) DO UPDATE SET status = excluded.status, \
                 jurisdiction = excluded.jurisdiction, received_at = excluded.received_at, \
                 deadline = excluded.deadline, closed_at = excluded.closed_at, \
                 row_data = excluded.row_data",
            )
            .bind(row.id.to_string())
            .bind(row.status.as_str())
            .bind(&row.jurisdiction)
            .bind(time(row.received_at))
            .bind(row.deadline.to_string())
            .bind(row.closed_at.map(time))
            .bind(encode(row)?)
            .execute(&mut *tx)
            .await?;
        }
        for row in folded.values() {
            unfinished_cleaners(&mut tx, row).await?;
        }
        tallies::write_sqlite(&mut tx, &counted).await?;
        apply_suppressions(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn find_suppressions(
        &self,
        hashes: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<SuppressionEntry>, StoreError> {
        let list = serde_json::to_string(hashes)
            .map_err(|e| StoreError::Corrupt(format!("suppression hashes: {e}")))?;
        let rows = sqlx::query(
            "SELECT hash, request_id, suppressed_at, expires_at FROM suppressions \
             WHERE hash IN (SELECT value FROM json_each(?1)) \
             AND (expires_at IS NULL OR expires_at > ?2) ORDER BY request_id, hash",
        )
        .bind(list)
        .bind(time(at))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(entry).collect()
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let mut query = list_query("", filter, after, limit);
        let records = query.build().fetch_all(self.writer()).await?;
        records
            .iter()
            .map(|r| decode(r.try_get("row_data")?))
            .collect()
    }

    async fn tallies(&self, figures: &[String]) -> Result<Vec<(TallyKey, Tally)>, StoreError> {
        let list = serde_json::to_string(figures)
            .map_err(|e| StoreError::Corrupt(format!("figures: {e}")))?;
        let rows = sqlx::query(
            "SELECT figure, key, bucket, count, total FROM request_tallies \
             WHERE figure IN (SELECT value FROM json_each(?1)) AND (count <> 0 OR total <> 0)",
        )
        .bind(list)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(tallies::tally).collect()
    }

    async fn count_open(
        &self,
        from: Option<NaiveDate>,
        until: Option<NaiveDate>,
    ) -> Result<u64, StoreError> {
        let mut query = super::open_query("COUNT(*)", from, until, &ENCODERS);
        let count: i64 = query.build_query_scalar().fetch_one(self.reader()).await?;
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
        let records = query.build().fetch_all(self.reader()).await?;
        records
            .iter()
            .map(|r| decode(r.try_get("row_data")?))
            .collect()
    }

    async fn explain_list(&self, filter: &RequestFilter) -> Result<Vec<String>, StoreError> {
        let mut query = list_query("EXPLAIN QUERY PLAN ", filter, None, 50);
        let rows = query.build().fetch_all(self.reader()).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("detail")?))
            .collect()
    }

    async fn backfill_tallies(&self) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        let done = tallies::backfill_sqlite(&mut tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn reset(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
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
        subscriptions::sqlite::restart_checkpoint(&mut tx, name, owner).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// How the list binds ids, dates and times.
const ENCODERS: super::Encoders<String, String, String> = super::Encoders {
    id: |id| id.to_string(),
    date: |date| date.to_string(),
    time,
};

/// The list's query on this backend.
fn list_query(
    prefix: &str,
    filter: &RequestFilter,
    after: Option<RequestId>,
    limit: u32,
) -> QueryBuilder<'static, sqlx::Sqlite> {
    super::list_query(
        prefix,
        filter,
        after,
        limit,
        (
            "CROSS JOIN",
            "INDEXED BY requests_projection_open_by_deadline",
        ),
        &ENCODERS,
    )
}

/// Replaces a request's rows in `unfinished_cleaners` by its cleaners not yet done.
async fn unfinished_cleaners(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    row: &RequestRow,
) -> Result<(), StoreError> {
    // A plan is set once, when the request becomes due: no cleaners, no rows before either.
    if row.cleaners.is_empty() {
        return Ok(());
    }
    let id = row.id.to_string();
    sqlx::query("DELETE FROM unfinished_cleaners WHERE request_id = ?1")
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    for cleaner in row.unfinished_cleaners() {
        sqlx::query(
            "INSERT INTO unfinished_cleaners (cleaner, request_id) VALUES (?1, ?2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(cleaner)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The batch's suppression changes, in log order.
async fn apply_suppressions(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    for change in changes(events)? {
        match change {
            SuppressionChange::Add(entries) => {
                for entry in entries {
                    sqlx::query(
                        "INSERT INTO suppressions (hash, request_id, suppressed_at, expires_at) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (hash, request_id) DO NOTHING",
                    )
                    .bind(&entry.hash)
                    .bind(entry.request_id.to_string())
                    .bind(time(entry.suppressed_at))
                    .bind(entry.expires_at.map(time))
                    .execute(&mut **tx)
                    .await?;
                }
            }
            SuppressionChange::Lift(id) => {
                sqlx::query("DELETE FROM suppressions WHERE request_id = ?1")
                    .bind(id.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}

fn entry(row: &sqlx::sqlite::SqliteRow) -> Result<SuppressionEntry, StoreError> {
    let corrupt =
        |what: &str, text: &str| StoreError::Corrupt(format!("suppressions {what} {text:?}"));
    let parse_time = |text: String| {
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| corrupt("time", &text))
    };
    let id: String = row.try_get("request_id")?;
    Ok(SuppressionEntry {
        hash: row.try_get("hash")?,
        request_id: id.parse().map_err(|_| corrupt("request id", &id))?,
        suppressed_at: parse_time(row.try_get("suppressed_at")?)?,
        expires_at: row
            .try_get::<Option<String>, _>("expires_at")?
            .map(parse_time)
            .transpose()?,
    })
}
