//! The workflow tables on SQLite. With one writer connection, a claim is a plain
//! `UPDATE ... RETURNING`: no other writer can race it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::RequestId;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{micros, Job, JobChange, JobKind, WorkflowStore};
use crate::store::{Checkpoint, SqliteStore, StoreError};
use crate::subscriptions;

/// SQLite keeps times as fixed-width RFC 3339 text, which orders as the times do.
pub(super) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A time as [`time`] wrote it.
pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("job time {text:?}: {e}")))
}

fn decode_job(row: &SqliteRow) -> Result<Job, StoreError> {
    let request_id: String = row.try_get("request_id")?;
    let run_at: String = row.try_get("run_at")?;
    let attempt: i64 = row.try_get("attempt")?;
    Ok(Job {
        request_id: request_id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("job request id {request_id:?}")))?,
        kind: JobKind::parse(row.try_get("kind")?)?,
        key: row.try_get("key")?,
        run_at: parse_time(&run_at)?,
        attempt: u32::try_from(attempt).unwrap_or(0),
    })
}

/// Applies job changes with one statement per run (see [`super::runs`]), each over a JSON
/// array: every statement is a trip to SQLite's thread, so one per change would dominate.
async fn apply_changes(
    tx: &mut Transaction<'_, Sqlite>,
    changes: &[JobChange],
) -> Result<(), StoreError> {
    for run in super::runs(changes) {
        let Some(first) = run.first().copied() else {
            continue;
        };
        let rows: Vec<serde_json::Value> = run
            .iter()
            .map(|change| match change {
                JobChange::Upsert(job) | JobChange::Ensure(job) => serde_json::json!([
                    job.request_id.to_string(),
                    job.kind.as_str(),
                    job.key,
                    time(job.run_at),
                    job.attempt
                ]),
                JobChange::Delete {
                    request_id,
                    kind,
                    key,
                    up_to_attempt,
                } => serde_json::json!([request_id.to_string(), kind.as_str(), key, up_to_attempt]),
                JobChange::DeleteAll { request_id } => serde_json::json!(request_id.to_string()),
            })
            .collect();
        // `WHERE true`: SQLite's parser needs it between INSERT ... SELECT and ON CONFLICT.
        let sql = match first {
            JobChange::Upsert(_) => {
                "INSERT INTO jobs (request_id, kind, key, run_at, attempt) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
                 FROM json_each(?1) WHERE true \
                 ON CONFLICT (request_id, kind, key) DO UPDATE SET \
                   run_at = excluded.run_at, attempt = excluded.attempt, \
                   lease_owner = NULL, lease_until = NULL, \
                   progress_done = NULL, progress_total = NULL, progress_at = NULL \
                 WHERE jobs.attempt < excluded.attempt"
            }
            JobChange::Ensure(_) => {
                "INSERT INTO jobs (request_id, kind, key, run_at, attempt) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
                 FROM json_each(?1) WHERE true \
                 ON CONFLICT (request_id, kind, key) DO NOTHING"
            }
            JobChange::Delete { .. } => {
                "DELETE FROM jobs WHERE rowid IN ( \
                   SELECT jobs.rowid FROM json_each(?1) AS d \
                   JOIN jobs ON jobs.request_id = d.value ->> 0 AND jobs.kind = d.value ->> 1 \
                     AND jobs.key = d.value ->> 2 \
                   WHERE jobs.attempt <= d.value ->> 3)"
            }
            JobChange::DeleteAll { .. } => {
                "DELETE FROM jobs WHERE request_id IN (SELECT value FROM json_each(?1)) \
                 AND kind NOT IN ('remind', 'notify')"
            }
        };
        sqlx::query(sql)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn commit_subscription(
        &self,
        name: &str,
        owner: &str,
        checkpoint: Checkpoint,
        changes: &[JobChange],
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        let owned =
            subscriptions::sqlite::commit_checkpoint(&mut tx, name, owner, checkpoint).await?;
        if !owned {
            tx.rollback().await?;
            return Ok(false);
        }
        apply_changes(&mut tx, changes).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_jobs(
        &self,
        kinds: &[JobKind],
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        // The kinds are our own constants, so listing them inline is safe.
        let kinds: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
        let sql = format!(
            "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 \
             WHERE rowid IN ( \
               SELECT rowid FROM jobs WHERE kind IN ({}) AND run_at <= ?3 \
                 AND (lease_until IS NULL OR lease_until < ?3) \
               ORDER BY run_at LIMIT ?4) \
             RETURNING request_id, kind, key, run_at, attempt",
            kinds.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(time(now + micros(lease)))
            .bind(time(now))
            .bind(i64::from(limit))
            .fetch_all(self.writer())
            .await?;
        let mut jobs: Vec<Job> = rows.iter().map(decode_job).collect::<Result<_, _>>()?;
        jobs.sort_by_key(|j| j.run_at);
        Ok(jobs)
    }

    async fn claim_batch(
        &self,
        key: &str,
        owner: &str,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 \
             WHERE rowid IN ( \
               SELECT rowid FROM jobs WHERE kind = 'dispatch' AND key = ?3 AND run_at <= ?4 \
                 AND (lease_until IS NULL OR lease_until < ?5) \
               ORDER BY run_at LIMIT ?6) \
             RETURNING request_id, kind, key, run_at, attempt",
        )
        .bind(owner)
        .bind(time(now + micros(lease)))
        .bind(key)
        .bind(time(horizon))
        .bind(time(now))
        .bind(i64::from(limit))
        .fetch_all(self.writer())
        .await?;
        let mut jobs: Vec<Job> = rows.iter().map(decode_job).collect::<Result<_, _>>()?;
        jobs.sort_by_key(|j| j.run_at);
        Ok(jobs)
    }

    async fn finish_job(&self, job: &Job, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM jobs WHERE request_id = ?1 AND kind = ?2 AND key = ?3 \
             AND attempt = ?4 AND lease_owner = ?5",
        )
        .bind(job.request_id.to_string())
        .bind(job.kind.as_str())
        .bind(&job.key)
        .bind(i64::from(job.attempt))
        .bind(owner)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn finish_jobs(&self, jobs: &[Job], owner: &str) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // One statement over a JSON array: each statement is a trip to SQLite's thread.
        let rows: Vec<serde_json::Value> = jobs
            .iter()
            .map(|j| {
                serde_json::json!([j.request_id.to_string(), j.kind.as_str(), j.key, j.attempt])
            })
            .collect();
        sqlx::query(
            "DELETE FROM jobs WHERE lease_owner = ?2 AND (request_id, kind, key, attempt) IN \
             (SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1))",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(owner)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn reschedule_job(
        &self,
        job: &Job,
        owner: &str,
        run_at: DateTime<Utc>,
        attempt: u32,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET run_at = ?6, attempt = ?7, lease_owner = NULL, lease_until = NULL, \
                   progress_done = NULL, progress_total = NULL, progress_at = NULL \
             WHERE request_id = ?1 AND kind = ?2 AND key = ?3 AND attempt = ?4 \
             AND lease_owner = ?5",
        )
        .bind(job.request_id.to_string())
        .bind(job.kind.as_str())
        .bind(&job.key)
        .bind(i64::from(job.attempt))
        .bind(owner)
        .bind(time(run_at))
        .bind(i64::from(attempt))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn apply(&self, changes: &[JobChange]) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        apply_changes(&mut tx, changes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn jobs_of(&self, request_id: RequestId) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, kind, key, run_at, attempt FROM jobs WHERE request_id = ?1 \
             ORDER BY run_at, kind, key",
        )
        .bind(request_id.to_string())
        .fetch_all(self.writer())
        .await?;
        rows.iter().map(decode_job).collect()
    }

    async fn pending_jobs(&self) -> Result<Vec<(JobKind, i64)>, StoreError> {
        let rows = sqlx::query("SELECT kind, count(*) AS n FROM jobs GROUP BY kind ORDER BY kind")
            .fetch_all(self.writer())
            .await?;
        rows.iter()
            .map(|row| Ok((JobKind::parse(row.try_get("kind")?)?, row.try_get("n")?)))
            .collect()
    }
}
