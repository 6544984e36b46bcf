//! The workflow engine: checkpointed subscriptions over the log, durable jobs (timers and
//! cleaner dispatches), the saga that derives jobs from events, and the workers that run them.
//!
//! Everything the workflow remembers lives in the database (`subscriptions`, `jobs`), never
//! only in memory, so a process can die at any moment and another (or the same, restarted)
//! carries on: a subscriber commits its job changes and its checkpoint in one transaction, and
//! a job is claimed with a lease that runs out if its worker dies.

mod postgres;
pub mod runtime;
pub mod saga;
mod sqlite;
pub mod subscription;
pub mod worker;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::RequestId;

use crate::store::{Checkpoint, StoreError};

/// What a job does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Send reminder `key` (an index) to the subject.
    Remind,
    /// End of the grace period: make the request due.
    Due,
    /// Tell the notifier about reminder `key`; retried until the notifier accepts.
    Notify,
    /// Call cleaner `key` for attempt `attempt`.
    Dispatch,
    /// Cleaner `key` answered 202 for attempt `attempt`; fail the attempt if no result comes.
    Callback,
    /// The retention after closing has passed: destroy the subject's key.
    Shred,
}

impl JobKind {
    pub const ALL: [Self; 6] = [
        Self::Remind,
        Self::Due,
        Self::Notify,
        Self::Dispatch,
        Self::Callback,
        Self::Shred,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Remind => "remind",
            Self::Due => "due",
            Self::Notify => "notify",
            Self::Dispatch => "dispatch",
            Self::Callback => "callback",
            Self::Shred => "shred",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job kind {text:?}")))
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job: unique per (request, kind, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub request_id: RequestId,
    pub kind: JobKind,
    pub key: String,
    pub run_at: DateTime<Utc>,
    pub attempt: u32,
}

/// A change to the jobs table, decided by a subscriber or a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    /// Insert, or replace the job with the same (request, kind, key) if that one has a lower
    /// attempt. A late event never winds a cleaner back, and a job of the same attempt (which
    /// a worker may hold leased, mid-call) is left alone.
    Upsert(Job),
    /// Insert the job unless one with the same (request, kind, key) exists.
    Ensure(Job),
    /// Remove the job (request, kind, key) if its attempt is at most `up_to_attempt`.
    Delete {
        request_id: RequestId,
        kind: JobKind,
        key: String,
        up_to_attempt: u32,
    },
    /// Remove every job of the request.
    DeleteAll { request_id: RequestId },
}

/// The workflow's tables.
#[async_trait]
pub trait WorkflowStore: Send + Sync + fmt::Debug {
    /// Takes or renews the subscription's lease for `owner` and returns its checkpoint, or
    /// `None` while another owner's lease runs.
    async fn acquire_subscription(
        &self,
        name: &str,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, StoreError>;

    /// Applies `changes` and moves the checkpoint to `checkpoint`, in one transaction, if
    /// `owner` still holds the subscription; returns false (and applies nothing) otherwise.
    async fn commit_subscription(
        &self,
        name: &str,
        owner: &str,
        checkpoint: Checkpoint,
        changes: &[JobChange],
    ) -> Result<bool, StoreError>;

    /// Gives the subscription up so another owner can take it at once.
    async fn release_subscription(&self, name: &str, owner: &str) -> Result<(), StoreError>;

    /// The subscription's checkpoint, if it ever ran.
    async fn subscription_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>, StoreError>;

    /// Claims up to `limit` jobs of these kinds whose time has come and whose lease (if any)
    /// ran out, leasing them to `owner` until `now + lease`. Earliest first.
    async fn claim_jobs(
        &self,
        kinds: &[JobKind],
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Removes a claimed job if it is still the one claimed (same attempt, same owner).
    async fn finish_job(&self, job: &Job, owner: &str) -> Result<(), StoreError>;

    /// Puts a claimed job back to run at `run_at` with `attempt`, releasing the lease, if it
    /// is still the one claimed.
    async fn reschedule_job(
        &self,
        job: &Job,
        owner: &str,
        run_at: DateTime<Utc>,
        attempt: u32,
    ) -> Result<(), StoreError>;

    /// Applies changes outside any subscription.
    async fn apply(&self, changes: &[JobChange]) -> Result<(), StoreError>;

    /// All jobs of one request (for tests and `show`).
    async fn jobs_of(&self, request_id: RequestId) -> Result<Vec<Job>, StoreError>;

    /// How many jobs wait, by kind.
    async fn pending_jobs(&self) -> Result<Vec<(JobKind, i64)>, StoreError>;
}

pub(crate) fn micros(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}
