//! The saga: which jobs each event calls for. It keeps no state of its own beyond the jobs
//! table; the request's state is always re-read from the log when a job runs.
//!
//! - `Received`: a `remind` job per reminder and the `due` job at the end of the grace period.
//! - `ReminderSent` / `ReminderNotSent`: that reminder's job goes (ADR 16).
//! - `Reminded` (written only before ADR 16): a `notify` job, which delivers the reminder as a
//!   `remind` job does, so a reminder pending at an upgrade still ends in an outcome.
//! - `Due`: one `dispatch` job for the whole request (key `""`, attempt 1): the first attempt
//!   of every planned cleaner (ADR 10).
//! - `CleanerFailed` (not exhausted): the next attempt's `dispatch` job after the backoff.
//! - `CleanerSucceeded` / `CleanerSkipped`: that cleaner's jobs go, and each cleaner naming it
//!   in `after` gets a `dispatch` job for its first attempt (ADR 27).
//! - `HoldReleased` / `CleanerRetried`: the `due` job again, which re-plans from the state.
//! - `Cancelled` / `Rejected` / `Completed`: every job of the request but its reminders' goes
//!   (a reminder's job ends by recording its outcome), and a `shred` job is set for the end of
//!   `retention_after_completion`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lethe_domain::event::{
    Cancelled, CleanerFailed, Completed, Rejected, ReminderNotSent, ReminderSent,
};
use lethe_domain::{CleanerName, Event, RequestId};
use rand::Rng;

use super::{order, Job, JobChange, JobKind};
use crate::config::Config;
use crate::store::{RecordedEvent, StoreError};
use crate::subscriptions::Subscriber;

pub const SAGA: &str = "saga";

#[derive(Debug, Clone)]
pub struct Saga {
    pub config: Arc<Config>,
}

impl Subscriber for Saga {
    type Write = JobChange;

    fn name(&self) -> &'static str {
        SAGA
    }

    fn handle(&self, recorded: &RecordedEvent) -> Result<Vec<JobChange>, StoreError> {
        let jobs = Jobs {
            request_id: recorded.stream_id,
        };
        let changes = match recorded.event()? {
            Event::Received(received) => {
                let mut changes: Vec<_> = (0_u32..)
                    .zip(&received.reminders)
                    .map(|(index, at)| jobs.set(JobKind::Remind, index.to_string(), *at, 0))
                    .collect();
                changes.push(jobs.set(JobKind::Due, String::new(), received.due_at, 0));
                changes
            }
            Event::Reminded(reminded) => vec![
                jobs.gone(JobKind::Remind, reminded.index.to_string()),
                jobs.set(
                    JobKind::Notify,
                    reminded.index.to_string(),
                    recorded.recorded_at,
                    0,
                ),
            ],
            Event::ReminderSent(ReminderSent { index, .. })
            | Event::ReminderNotSent(ReminderNotSent { index, .. }) => [
                jobs.gone(JobKind::Remind, index.to_string()),
                jobs.gone(JobKind::Notify, index.to_string()),
            ]
            .to_vec(),
            Event::Due(due) => {
                let mut changes = vec![jobs.gone(JobKind::Due, String::new())];
                if !due.cleaners.is_empty() {
                    changes.push(jobs.set(JobKind::Dispatch, String::new(), due.at, 1));
                }
                changes
            }
            Event::CleanerFailed(failed) => self.after_failure(&jobs, &failed),
            Event::CleanerSucceeded(e) => self.after_done(&jobs, &e.cleaner, e.at),
            Event::CleanerSkipped(e) => self.after_done(&jobs, &e.cleaner, e.at),
            Event::HoldReleased(e) => vec![jobs.set(JobKind::Due, String::new(), e.at, 0)],
            Event::CleanerRetried(e) => vec![jobs.set(JobKind::Due, String::new(), e.at, 0)],
            Event::Cancelled(Cancelled { at, .. })
            | Event::Rejected(Rejected { at, .. })
            | Event::Completed(Completed { at }) => {
                let retention = super::micros(self.config.policy.retention_after_completion.0);
                vec![
                    JobChange::DeleteAll {
                        request_id: jobs.request_id,
                    },
                    jobs.set(JobKind::Shred, String::new(), at + retention, 0),
                ]
            }
            Event::HoldPlaced(_) | Event::DeadlineExtended(_) | Event::Shredded(_) => vec![],
        };
        Ok(changes)
    }
}

impl Saga {
    /// A cleaner succeeded or was skipped: its jobs go, and every cleaner naming it in
    /// `after` gets its first attempt's job (the dispatch step makes the call if the request
    /// plans it, nothing holds it back any longer and it has had no attempt; otherwise it
    /// finishes the job without a call). A batched cleaner's job waits its `batch.wait` for
    /// others to join.
    fn after_done(&self, jobs: &Jobs, done: &CleanerName, at: DateTime<Utc>) -> Vec<JobChange> {
        let mut changes = jobs.cleaner_gone(done.as_str());
        for waiting in order::waiting_for(&self.config, done) {
            let wait = waiting.batch.map_or(Duration::ZERO, |b| b.wait.0);
            changes.push(jobs.set(
                JobKind::Dispatch,
                waiting.name.to_string(),
                at + super::micros(wait),
                1,
            ));
        }
        changes
    }

    /// A failed attempt: its callback deadline goes, and unless the cleaner is out of
    /// attempts, the next attempt's dispatch is set after the cleaner's backoff (at least its
    /// `Retry-After`).
    fn after_failure(&self, jobs: &Jobs, failed: &CleanerFailed) -> Vec<JobChange> {
        let mut changes = vec![JobChange::Delete {
            request_id: jobs.request_id,
            kind: JobKind::Callback,
            key: failed.cleaner.to_string(),
            up_to_attempt: failed.attempt,
        }];
        if !failed.exhausted {
            let policy = self
                .config
                .cleaner(&failed.cleaner)
                .map(|c| c.retry.policy())
                .unwrap_or_default();
            let jitter: f64 = rand::rng().random();
            let delay = policy.delay_after(
                failed.attempt,
                jitter,
                failed.retry_after_seconds.map(Duration::from_secs),
            );
            let run_at = failed.at + super::micros(delay);
            changes.push(jobs.set(
                JobKind::Dispatch,
                failed.cleaner.to_string(),
                run_at,
                failed.attempt + 1,
            ));
        }
        changes
    }
}

/// The job changes of one request.
struct Jobs {
    request_id: RequestId,
}

impl Jobs {
    /// Sets job (kind, key) to run at `run_at` for `attempt` (a later attempt wins).
    fn set(&self, kind: JobKind, key: String, run_at: DateTime<Utc>, attempt: u32) -> JobChange {
        JobChange::Upsert(Job {
            request_id: self.request_id,
            kind,
            key,
            run_at,
            attempt,
        })
    }

    /// Removes job (kind, key), whatever its attempt.
    fn gone(&self, kind: JobKind, key: String) -> JobChange {
        JobChange::Delete {
            request_id: self.request_id,
            kind,
            key,
            up_to_attempt: u32::MAX,
        }
    }

    /// Removes a cleaner's dispatch and callback jobs.
    fn cleaner_gone(&self, cleaner: &str) -> Vec<JobChange> {
        vec![
            self.gone(JobKind::Dispatch, cleaner.to_owned()),
            self.gone(JobKind::Callback, cleaner.to_owned()),
        ]
    }
}
