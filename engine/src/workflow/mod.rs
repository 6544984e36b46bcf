//! The workflow engine: checkpointed subscriptions over the log, durable jobs (timers and
//! cleaner dispatches), the saga that derives jobs from events, and the workers that run them.
//!
//! Everything the workflow remembers lives in the database (`subscriptions`, `jobs`), never
//! only in memory, so a process can die at any moment and another (or the same, restarted)
//! carries on: a subscriber commits its job changes and its checkpoint in one transaction, and
//! a job is claimed with a lease that runs out if its worker dies.

mod batch;
mod completion;
mod dispatch;
mod error;
mod limits;
mod notifier;
mod order;
mod postgres;
mod progress;
pub mod saga;
mod schedule;
mod sqlite;
mod timers;
mod workers;

pub use dispatch::{callback_job, CallbackJobs};
pub use error::WorkflowError;
pub use notifier::reminder_idempotency_key;
pub use workers::Workers;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::RequestId;

use crate::store::{Checkpoint, StoreError};
use crate::subscriptions::{Sink, SubscriptionStore};

/// What a job does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Deliver reminder `key` (an index) through the notifier, retried until it accepts or
    /// the reminder is moot; ends only by recording its outcome (ADR 16).
    Remind,
    /// End of the grace period: make the request due.
    Due,
    /// Written by versions before ADR 16 after a `Reminded` (and by the saga for a `Reminded`
    /// it reads): runs exactly as `Remind` does.
    Notify,
    /// Call cleaner `key` for attempt `attempt`. With an empty key: the first attempt of every
    /// planned cleaner that has had none (the job `Due` sets, one per request; ADR 10).
    Dispatch,
    /// Cleaner `key` answered 202 for attempt `attempt`; fail the attempt if no result comes.
    Callback,
    /// The retention after closing has passed: destroy the subject's key.
    Shred,
    /// Tell the notifier the request completed, with its signed receipt.
    Completion,
}

impl JobKind {
    pub const ALL: [Self; 7] = [
        Self::Remind,
        Self::Due,
        Self::Notify,
        Self::Dispatch,
        Self::Callback,
        Self::Shred,
        Self::Completion,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Remind => "remind",
            Self::Due => "due",
            Self::Notify => "notify",
            Self::Dispatch => "dispatch",
            Self::Callback => "callback",
            Self::Shred => "shred",
            Self::Completion => "completion",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job kind {text:?}")))
    }
}

impl JobKind {
    /// A reminder's job: it outlives the request's other jobs, since it ends only by recording
    /// the reminder's outcome (ADR 16).
    pub const fn is_reminder(self) -> bool {
        matches!(self, Self::Remind | Self::Notify)
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

impl Job {
    /// A `dispatch` job for the first attempt of all the request's cleaners, not for one.
    pub fn dispatches_all(&self) -> bool {
        self.kind == JobKind::Dispatch && self.key.is_empty()
    }
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
    /// Remove every job of the request but its reminders' ([`JobKind::is_reminder`]): a
    /// reminder's job ends only by recording what became of it (ADR 16).
    DeleteAll { request_id: RequestId },
}

/// The workflow's tables. Its subscriptions (the saga's) live in the same database, so the
/// jobs a batch calls for are written in the transaction that moves the checkpoint.
#[async_trait]
pub trait WorkflowStore: SubscriptionStore {
    /// Applies `changes` and moves the checkpoint to `checkpoint`, in one transaction, if
    /// `owner` still holds the subscription; returns false (and applies nothing) otherwise.
    async fn commit_subscription(
        &self,
        name: &str,
        owner: &str,
        checkpoint: Checkpoint,
        changes: &[JobChange],
    ) -> Result<bool, StoreError>;

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

    /// Claims up to `limit` dispatch jobs of cleaner `key` that are due by `horizon` and whose
    /// lease (if any) ran out by `now`, leasing them to `owner` until `now + lease`. Earliest
    /// first: the jobs that join a batch (`batch` in lethe.toml).
    async fn claim_batch(
        &self,
        key: &str,
        owner: &str,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Removes a claimed job if it is still the one claimed (same attempt, same owner).
    async fn finish_job(&self, job: &Job, owner: &str) -> Result<(), StoreError>;

    /// [`finish_job`](Self::finish_job) for many jobs, in one transaction.
    async fn finish_jobs(&self, jobs: &[Job], owner: &str) -> Result<(), StoreError>;

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

/// The jobs table as where a subscriber's job changes go (the saga's).
#[async_trait]
impl<T: WorkflowStore + ?Sized> Sink<JobChange> for T {
    async fn commit(
        &self,
        name: &str,
        owner: &str,
        checkpoint: Checkpoint,
        writes: &[JobChange],
    ) -> Result<bool, StoreError> {
        self.commit_subscription(name, owner, checkpoint, writes)
            .await
    }
}

/// Orders `changes` into runs that can each be one multi-row statement: every run holds
/// changes of one kind, none touching the same job twice, and applying the runs in order has
/// the effect of applying the changes one by one. Changes to different jobs commute, so a
/// change only has to come after the earlier changes to its own job (for `DeleteAll`, to any
/// job of its request); a subscriber's batch of hundreds of events becomes a handful of
/// statements instead of one per alternation of kinds.
pub(crate) fn runs(changes: &[JobChange]) -> Vec<Vec<&JobChange>> {
    use std::collections::HashMap;
    // The level of each change: one past the latest earlier change it must follow.
    let mut job_level: HashMap<(RequestId, JobKind, &str), usize> = HashMap::new();
    // Per request: the highest level of any change, and of its latest `DeleteAll`.
    let mut request_level: HashMap<RequestId, (usize, Option<usize>)> = HashMap::new();
    let mut levels: Vec<Vec<Vec<&JobChange>>> = Vec::new();
    for change in changes {
        let (request_id, job) = match change {
            JobChange::Upsert(job) | JobChange::Ensure(job) => {
                (job.request_id, Some((job.kind, job.key.as_str())))
            }
            JobChange::Delete {
                request_id,
                kind,
                key,
                ..
            } => (*request_id, Some((*kind, key.as_str()))),
            JobChange::DeleteAll { request_id } => (*request_id, None),
        };
        let (any, delete_all) = request_level.get(&request_id).copied().unwrap_or((0, None));
        let after_delete_all = delete_all.map_or(0, |l| l + 1);
        let level = match job {
            Some((kind, key)) => {
                let own = job_level.get(&(request_id, kind, key)).map_or(0, |l| l + 1);
                let level = own.max(after_delete_all);
                job_level.insert((request_id, kind, key), level);
                level
            }
            None => {
                let level = if request_level.contains_key(&request_id) {
                    any + 1
                } else {
                    0
                };
                request_level.insert(request_id, (level, Some(level)));
                level
            }
        };
        let entry = request_level.entry(request_id).or_insert((0, None));
        entry.0 = entry.0.max(level);
        if levels.len() <= level {
            levels.resize_with(level + 1, Vec::new);
        }
        let kind = kind_index(change);
        let runs = &mut levels[level];
        if runs.len() <= kind {
            runs.resize_with(kind + 1, Vec::new);
        }
        runs[kind].push(change);
    }
    levels
        .into_iter()
        .flatten()
        .filter(|run| !run.is_empty())
        .collect()
}

const fn kind_index(change: &JobChange) -> usize {
    match change {
        JobChange::Upsert(_) => 0,
        JobChange::Ensure(_) => 1,
        JobChange::Delete { .. } => 2,
        JobChange::DeleteAll { .. } => 3,
    }
}

pub(crate) fn micros(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    type Table = HashMap<(RequestId, JobKind, String), u32>;

    /// The jobs table's rules for one change (as the SQL of both stores applies them).
    fn apply(table: &mut Table, change: &JobChange) {
        match change {
            JobChange::Upsert(job) => {
                let slot = table
                    .entry((job.request_id, job.kind, job.key.clone()))
                    .or_insert(job.attempt);
                if *slot < job.attempt {
                    *slot = job.attempt;
                }
            }
            JobChange::Ensure(job) => {
                table
                    .entry((job.request_id, job.kind, job.key.clone()))
                    .or_insert(job.attempt);
            }
            JobChange::Delete {
                request_id,
                kind,
                key,
                up_to_attempt,
            } => {
                let id = (*request_id, *kind, key.clone());
                if table.get(&id).is_some_and(|a| a <= up_to_attempt) {
                    table.remove(&id);
                }
            }
            JobChange::DeleteAll { request_id } => {
                table.retain(|(r, kind, _), _| r != request_id || kind.is_reminder());
            }
        }
    }

    fn change(requests: &[RequestId]) -> impl Strategy<Value = JobChange> + '_ {
        (
            0..4_usize,
            0..requests.len(),
            0..2_usize,
            0..2_usize,
            0..4_u32,
        )
            .prop_map(move |(what, request, kind, key, attempt)| {
                let request_id = requests[request];
                let kind = [JobKind::Dispatch, JobKind::Callback][kind];
                let key = ["a", "b"][key].to_owned();
                let job = Job {
                    request_id,
                    kind,
                    key: key.clone(),
                    run_at: DateTime::<Utc>::UNIX_EPOCH,
                    attempt,
                };
                match what {
                    0 => JobChange::Upsert(job),
                    1 => JobChange::Ensure(job),
                    2 => JobChange::Delete {
                        request_id,
                        kind,
                        key,
                        up_to_attempt: attempt,
                    },
                    _ => JobChange::DeleteAll { request_id },
                }
            })
    }

    proptest! {
        /// Applying the runs, each in any order within itself, ends where applying the
        /// changes one by one does; and each run is one kind, no job twice.
        #[test]
        fn runs_apply_like_the_changes_one_by_one(
            start in proptest::collection::vec((0..2_usize, 0..2_usize, 0..2_usize, 0..4_u32), 0..6),
            changes in proptest::collection::vec(change(&*REQUESTS), 0..40),
        ) {
            let mut one_by_one = Table::new();
            for (request, kind, key, attempt) in start {
                let kind = [JobKind::Dispatch, JobKind::Callback][kind];
                one_by_one.insert((REQUESTS[request], kind, ["a", "b"][key].to_owned()), attempt);
            }
            let mut by_runs = one_by_one.clone();
            for change in &changes {
                apply(&mut one_by_one, change);
            }
            let runs = runs(&changes);
            prop_assert_eq!(runs.iter().map(Vec::len).sum::<usize>(), changes.len());
            for run in &runs {
                prop_assert!(run.iter().all(|c| kind_index(c) == kind_index(run[0])));
                let mut seen = std::collections::HashSet::new();
                for change in run {
                    let target = match change {
                        JobChange::Upsert(job) | JobChange::Ensure(job) => {
                            (job.request_id, Some((job.kind, job.key.clone())))
                        }
                        JobChange::Delete { request_id, kind, key, .. } => {
                            (*request_id, Some((*kind, key.clone())))
                        }
                        JobChange::DeleteAll { request_id } => (*request_id, None),
                    };
                    prop_assert!(seen.insert(target), "a run touches a job twice");
                }
                for change in run.iter().rev() {
                    apply(&mut by_runs, change);
                }
            }
            prop_assert_eq!(by_runs, one_by_one);
        }
    }

    static REQUESTS: std::sync::LazyLock<[RequestId; 2]> = std::sync::LazyLock::new(|| {
        [
            RequestId::from_uuid(uuid::Uuid::now_v7()),
            RequestId::from_uuid(uuid::Uuid::now_v7()),
        ]
    });

    /// A saga batch of many requests' lifecycles becomes a few statements, not one per event.
    #[test]
    fn a_saga_batch_needs_few_statements() {
        let mut changes = Vec::new();
        for _ in 0..100 {
            let request_id = RequestId::from_uuid(uuid::Uuid::now_v7());
            let job = |kind, key: &str, attempt| Job {
                request_id,
                kind,
                key: key.to_owned(),
                run_at: DateTime::<Utc>::UNIX_EPOCH,
                attempt,
            };
            changes.push(JobChange::Delete {
                request_id,
                kind: JobKind::Due,
                key: String::new(),
                up_to_attempt: u32::MAX,
            });
            for cleaner in ["a", "b", "c"] {
                changes.push(JobChange::Upsert(job(JobKind::Dispatch, cleaner, 1)));
            }
            for cleaner in ["a", "b", "c"] {
                for kind in [JobKind::Dispatch, JobKind::Callback] {
                    changes.push(JobChange::Delete {
                        request_id,
                        kind,
                        key: cleaner.to_owned(),
                        up_to_attempt: u32::MAX,
                    });
                }
            }
            changes.push(JobChange::DeleteAll { request_id });
            changes.push(JobChange::Upsert(job(JobKind::Shred, "", 0)));
        }
        assert_eq!(runs(&changes).len(), 5);
    }
}
