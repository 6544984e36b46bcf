//! The workflow tables on Postgres. Jobs are claimed with `FOR UPDATE SKIP LOCKED`, so several
//! engine instances share the work without waiting on each other.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::RequestId;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

use super::{micros, Job, JobChange, JobKind, WorkflowStore};
use crate::store::{Checkpoint, PostgresStore, StoreError};
use crate::subscriptions;

fn decode_job(row: &PgRow) -> Result<Job, StoreError> {
    let attempt: i32 = row.try_get("attempt")?;
    Ok(Job {
        request_id: RequestId::from_uuid(row.try_get("request_id")?),
        kind: JobKind::parse(row.try_get("kind")?)?,
        key: row.try_get("key")?,
        run_at: row.try_get("run_at")?,
        attempt: u32::try_from(attempt).unwrap_or(0),
    })
}

fn attempt(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Applies job changes with one multi-row statement per run (see [`super::runs`]).
async fn apply_changes(
    tx: &mut Transaction<'_, Postgres>,
    changes: &[JobChange],
) -> Result<(), StoreError> {
    for run in super::runs(changes) {
        apply_run(tx, &run).await?;
    }
    Ok(())
}

/// Changes of one kind, no job twice.
async fn apply_run(
    tx: &mut Transaction<'_, Postgres>,
    run: &[&JobChange],
) -> Result<(), StoreError> {
    let Some(first) = run.first().copied() else {
        return Ok(());
    };
    let jobs: Vec<&Job> = run
        .iter()
        .filter_map(|c| match c {
            JobChange::Upsert(job) | JobChange::Ensure(job) => Some(job),
            _ => None,
        })
        .collect();
    let sql = match first {
        JobChange::Upsert(_) => {
            "INSERT INTO jobs (request_id, kind, key, run_at, attempt) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
             $5::int4[]) \
             ON CONFLICT (request_id, kind, key) DO UPDATE SET \
               run_at = excluded.run_at, attempt = excluded.attempt, \
               lease_owner = NULL, lease_until = NULL, \
                   progress_done = NULL, progress_total = NULL, progress_at = NULL \
             WHERE jobs.attempt < excluded.attempt"
        }
        JobChange::Ensure(_) => {
            "INSERT INTO jobs (request_id, kind, key, run_at, attempt) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
             $5::int4[]) \
             ON CONFLICT (request_id, kind, key) DO NOTHING"
        }
        JobChange::Delete { .. } => {
            let (mut ids, mut kinds, mut keys, mut attempts) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for change in run {
                if let JobChange::Delete {
                    request_id,
                    kind,
                    key,
                    up_to_attempt,
                } = change
                {
                    ids.push(*request_id.as_uuid());
                    kinds.push(kind.as_str());
                    keys.push(key.as_str());
                    attempts.push(attempt(*up_to_attempt));
                }
            }
            sqlx::query(
                "DELETE FROM jobs USING unnest($1::uuid[], $2::text[], $3::text[], $4::int4[]) \
                 AS d(request_id, kind, key, up_to) \
                 WHERE jobs.request_id = d.request_id AND jobs.kind = d.kind \
                 AND jobs.key = d.key AND jobs.attempt <= d.up_to",
            )
            .bind(&ids)
            .bind(&kinds)
            .bind(&keys)
            .bind(&attempts)
            .execute(&mut **tx)
            .await?;
            return Ok(());
        }
        JobChange::DeleteAll { .. } => {
            let ids: Vec<uuid::Uuid> = run
                .iter()
                .filter_map(|c| match c {
                    JobChange::DeleteAll { request_id } => Some(*request_id.as_uuid()),
                    _ => None,
                })
                .collect();
            sqlx::query(
                "DELETE FROM jobs WHERE request_id = ANY($1) AND kind NOT IN ('remind', 'notify')",
            )
            .bind(&ids)
            .execute(&mut **tx)
            .await?;
            return Ok(());
        }
    };
    sqlx::query(sql)
        .bind(
            jobs.iter()
                .map(|j| *j.request_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(jobs.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.key.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.run_at).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| attempt(j.attempt)).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn commit_subscription(
        &self,
        name: &str,
        owner: &str,
        checkpoint: Checkpoint,
        changes: &[JobChange],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Fencing: a deposed owner's batch is a no-op.
        let owned =
            subscriptions::postgres::commit_checkpoint(&mut tx, name, owner, checkpoint).await?;
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
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let rows = sqlx::query(
            // Per kind through the (kind, run_at) index, so a claim for timers does not walk
            // past thousands of ready dispatches (or the other way round).
            "UPDATE jobs SET lease_owner = $2, lease_until = $3 \
             WHERE (request_id, kind, key) IN ( \
               SELECT j.request_id, j.kind, j.key FROM unnest($1::text[]) AS k(kind) \
               CROSS JOIN LATERAL ( \
                 SELECT request_id, kind, key, run_at FROM jobs \
                 WHERE jobs.kind = k.kind AND run_at <= $4 \
                   AND (lease_until IS NULL OR lease_until < $4) \
                 ORDER BY run_at LIMIT $5 FOR UPDATE SKIP LOCKED) AS j \
               ORDER BY j.run_at LIMIT $5) \
             RETURNING request_id, kind, key, run_at, attempt",
        )
        .bind(&kinds)
        .bind(owner)
        .bind(now + micros(lease))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
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
            "UPDATE jobs SET lease_owner = $2, lease_until = $3 \
             WHERE (request_id, kind, key) IN ( \
               SELECT request_id, kind, key FROM jobs \
               WHERE kind = 'dispatch' AND key = $1 AND run_at <= $5 \
                 AND (lease_until IS NULL OR lease_until < $4) \
               ORDER BY run_at LIMIT $6 FOR UPDATE SKIP LOCKED) \
             RETURNING request_id, kind, key, run_at, attempt",
        )
        .bind(key)
        .bind(owner)
        .bind(now + micros(lease))
        .bind(now)
        .bind(horizon)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut jobs: Vec<Job> = rows.iter().map(decode_job).collect::<Result<_, _>>()?;
        jobs.sort_by_key(|j| j.run_at);
        Ok(jobs)
    }

    async fn finish_job(&self, job: &Job, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM jobs WHERE request_id = $1 AND kind = $2 AND key = $3 \
             AND attempt = $4 AND lease_owner = $5",
        )
        .bind(job.request_id.as_uuid())
        .bind(job.kind.as_str())
        .bind(&job.key)
        .bind(attempt(job.attempt))
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn finish_jobs(&self, jobs: &[Job], owner: &str) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // SKIP LOCKED: a row locked now is being changed by a subscriber (the saga removes a
        // finished cleaner's jobs, or all of a completed request's, or moves a failed
        // cleaner's job to its next attempt) and waiting for that transaction only held this
        // worker up (measured: most of the waits on row locks during `lifecycle`). Whatever
        // it decides stands; should it roll back, the job stays leased, runs again when the
        // lease runs out and is finished without a call (the request says the attempt is
        // recorded).
        sqlx::query(
            "DELETE FROM jobs WHERE ctid = ANY(ARRAY( \
               SELECT jobs.ctid FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int4[]) \
                 AS f(request_id, kind, key, attempt) \
               JOIN jobs ON jobs.request_id = f.request_id AND jobs.kind = f.kind \
                 AND jobs.key = f.key \
               WHERE jobs.attempt = f.attempt AND jobs.lease_owner = $5 \
               FOR UPDATE OF jobs SKIP LOCKED))",
        )
        .bind(
            jobs.iter()
                .map(|j| *j.request_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(jobs.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.key.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| attempt(j.attempt)).collect::<Vec<_>>())
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn reschedule_job(
        &self,
        job: &Job,
        owner: &str,
        run_at: DateTime<Utc>,
        new_attempt: u32,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET run_at = $6, attempt = $7, lease_owner = NULL, lease_until = NULL, \
                   progress_done = NULL, progress_total = NULL, progress_at = NULL \
             WHERE request_id = $1 AND kind = $2 AND key = $3 AND attempt = $4 \
             AND lease_owner = $5",
        )
        .bind(job.request_id.as_uuid())
        .bind(job.kind.as_str())
        .bind(&job.key)
        .bind(attempt(job.attempt))
        .bind(owner)
        .bind(run_at)
        .bind(attempt(new_attempt))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn apply(&self, changes: &[JobChange]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        apply_changes(&mut tx, changes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn jobs_of(&self, request_id: RequestId) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, kind, key, run_at, attempt FROM jobs WHERE request_id = $1 \
             ORDER BY run_at, kind, key",
        )
        .bind(request_id.as_uuid())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_job).collect()
    }

    async fn pending_jobs(&self) -> Result<Vec<(JobKind, i64)>, StoreError> {
        let rows = sqlx::query("SELECT kind, count(*) AS n FROM jobs GROUP BY kind ORDER BY kind")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((JobKind::parse(row.try_get("kind")?)?, row.try_get("n")?)))
            .collect()
    }
}
