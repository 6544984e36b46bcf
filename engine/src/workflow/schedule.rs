//! When each cleaner of a request is next to be called: its dispatch jobs (the first attempt
//! of every planned cleaner, or one cleaner's next attempt), for the request's page.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::{CleanerName, RequestId};
use sqlx::Row;

use super::sqlite::parse_time;
use super::JobKind;
use crate::app::request_page::{AttemptSchedule, NextAttempt};
use crate::store::{PostgresStore, SqliteStore, StoreError};

fn decode(key: String, attempt: i64, at: DateTime<Utc>) -> Result<NextAttempt, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("dispatch job {key:?}: {what}"));
    let cleaner = if key.is_empty() {
        None
    } else {
        Some(CleanerName::parse(key.clone()).map_err(|_| corrupt("not a cleaner name"))?)
    };
    Ok(NextAttempt {
        cleaner,
        attempt: u32::try_from(attempt).map_err(|_| corrupt("attempt"))?,
        at,
    })
}

#[async_trait]
impl AttemptSchedule for PostgresStore {
    async fn next_attempts(&self, request_id: RequestId) -> Result<Vec<NextAttempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, attempt, run_at FROM jobs WHERE request_id = $1 AND kind = $2 \
             ORDER BY key",
        )
        .bind(request_id.as_uuid())
        .bind(JobKind::Dispatch.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                decode(
                    row.try_get("key")?,
                    i64::from(row.try_get::<i32, _>("attempt")?),
                    row.try_get("run_at")?,
                )
            })
            .collect()
    }
}

#[async_trait]
impl AttemptSchedule for SqliteStore {
    async fn next_attempts(&self, request_id: RequestId) -> Result<Vec<NextAttempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, attempt, run_at FROM jobs WHERE request_id = ?1 AND kind = ?2 \
             ORDER BY key",
        )
        .bind(request_id.to_string())
        .bind(JobKind::Dispatch.as_str())
        .fetch_all(self.writer())
        .await?;
        rows.iter()
            .map(|row| {
                let at = parse_time(row.try_get("run_at")?)?;
                decode(row.try_get("key")?, row.try_get("attempt")?, at)
            })
            .collect()
    }
}
