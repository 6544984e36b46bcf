//! Cleaners' progress on awaited attempts (ADR 36), kept on the attempt's callback job: a
//! heartbeat moves the job's `run_at` (the deadline) and replaces the last report; the job,
//! and the report with it, goes when the result is recorded or the deadline fails the attempt.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::{CleanerName, RequestId};
use sqlx::Row;

use super::sqlite::{parse_time, time};
use super::JobKind;
use crate::app::progress::{AwaitedResults, CleanerProgress, Progress};
use crate::store::{PostgresStore, SqliteStore, StoreError};

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode(
    key: String,
    attempt: i64,
    done: i64,
    total: Option<i64>,
    at: DateTime<Utc>,
    deadline: DateTime<Utc>,
) -> Result<CleanerProgress, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("progress of callback job {key:?}: {what}"));
    Ok(CleanerProgress {
        cleaner: CleanerName::parse(key.clone()).map_err(|_| corrupt("not a cleaner name"))?,
        attempt: u32::try_from(attempt).map_err(|_| corrupt("attempt"))?,
        progress: Progress {
            done: u64::try_from(done).map_err(|_| corrupt("done"))?,
            total: total
                .map(u64::try_from)
                .transpose()
                .map_err(|_| corrupt("total"))?,
        },
        at,
        deadline,
    })
}

#[async_trait]
impl AwaitedResults for PostgresStore {
    async fn heartbeat(
        &self,
        request_id: RequestId,
        reported: &CleanerProgress,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE jobs SET run_at = $5, progress_done = $6, progress_total = $7, \
               progress_at = $4 \
             WHERE request_id = $1 AND kind = 'callback' AND key = $2 AND attempt = $3 \
               AND run_at > $4 AND (lease_until IS NULL OR lease_until <= $4)",
        )
        .bind(request_id.as_uuid())
        .bind(reported.cleaner.as_str())
        .bind(i32::try_from(reported.attempt).unwrap_or(i32::MAX))
        .bind(now)
        .bind(reported.deadline)
        .bind(count(reported.progress.done))
        .bind(reported.progress.total.map(count))
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn progress_of(&self, request_id: RequestId) -> Result<Vec<CleanerProgress>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, attempt, progress_done, progress_total, progress_at, run_at FROM jobs \
             WHERE request_id = $1 AND kind = $2 AND progress_at IS NOT NULL ORDER BY key",
        )
        .bind(request_id.as_uuid())
        .bind(JobKind::Callback.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                decode(
                    row.try_get("key")?,
                    i64::from(row.try_get::<i32, _>("attempt")?),
                    row.try_get("progress_done")?,
                    row.try_get("progress_total")?,
                    row.try_get("progress_at")?,
                    row.try_get("run_at")?,
                )
            })
            .collect()
    }
}

#[async_trait]
impl AwaitedResults for SqliteStore {
    async fn heartbeat(
        &self,
        request_id: RequestId,
        reported: &CleanerProgress,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let now = time(now);
        let updated = sqlx::query(
            "UPDATE jobs SET run_at = ?5, progress_done = ?6, progress_total = ?7, \
               progress_at = ?4 \
             WHERE request_id = ?1 AND kind = 'callback' AND key = ?2 AND attempt = ?3 \
               AND run_at > ?4 AND (lease_until IS NULL OR lease_until <= ?4)",
        )
        .bind(request_id.to_string())
        .bind(reported.cleaner.as_str())
        .bind(i64::from(reported.attempt))
        .bind(&now)
        .bind(time(reported.deadline))
        .bind(count(reported.progress.done))
        .bind(reported.progress.total.map(count))
        .execute(self.writer())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn progress_of(&self, request_id: RequestId) -> Result<Vec<CleanerProgress>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, attempt, progress_done, progress_total, progress_at, run_at FROM jobs \
             WHERE request_id = ?1 AND kind = ?2 AND progress_at IS NOT NULL ORDER BY key",
        )
        .bind(request_id.to_string())
        .bind(JobKind::Callback.as_str())
        .fetch_all(self.writer())
        .await?;
        rows.iter()
            .map(|row| {
                decode(
                    row.try_get("key")?,
                    row.try_get("attempt")?,
                    row.try_get("progress_done")?,
                    row.try_get("progress_total")?,
                    parse_time(row.try_get("progress_at")?)?,
                    parse_time(row.try_get("run_at")?)?,
                )
            })
            .collect()
    }
}
