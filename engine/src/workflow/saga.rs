//! The saga: which jobs each event calls for. It keeps no state of its own beyond the jobs
//! table; the request's state is always re-read from the log when a job runs.
//!
//! - `Received`: a `remind` job per reminder and the `due` job at the end of the grace period;
//!   nothing when it awaits approval, and then `Approved` sets them.
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
            // Awaiting approval, nothing is timed: the approval starts the grace period.
            Event::Received(received) if received.awaiting_approval => vec![],
            Event::Received(received) => jobs.grace(&received.reminders, received.due_at),
            Event::Approved(approved) => jobs.grace(&approved.reminders, approved.due_at),
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
            Event::CleanerFailed(failed) => {
                self.after_failure(&jobs, &failed, rand::rng().random())
            }
            Event::CleanerSucceeded(e) => self.after_done(&jobs, &e.cleaner, e.at),
            Event::CleanerSkipped(e) => self.after_done(&jobs, &e.cleaner, e.at),
            Event::HoldReleased(e) => vec![jobs.set(JobKind::Due, String::new(), e.at, 0)],
            Event::CleanerRetried(e) => vec![jobs.set(JobKind::Due, String::new(), e.at, 0)],
            Event::Cancelled(Cancelled { at, .. })
            | Event::Rejected(Rejected { at, .. })
            | Event::Completed(Completed { at, .. }) => {
                let retention = super::micros(self.config.policy.retention_after_completion.0);
                let mut changes = vec![
                    JobChange::DeleteAll {
                        request_id: jobs.request_id,
                    },
                    jobs.set(JobKind::Shred, String::new(), at + retention, 0),
                ];
                // The notifier is told of a completion, with its receipt.
                if recorded.event_type == "Completed" && self.config.notifier.is_some() {
                    changes.push(jobs.set(JobKind::Completion, String::new(), at, 0));
                }
                changes
            }
            Event::HoldPlaced(_)
            | Event::DeadlineExtended(_)
            | Event::Shredded(_)
            | Event::Suppressed(_)
            | Event::SuppressionLifted(_)
            | Event::PreviouslyErased(_) => vec![],
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
    /// `Retry-After`). `jitter`, in `[0, 1)`, places the delay within the backoff's step.
    fn after_failure(&self, jobs: &Jobs, failed: &CleanerFailed, jitter: f64) -> Vec<JobChange> {
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
    /// A grace period's jobs: a `remind` job per reminder and the `due` job at its end.
    fn grace(&self, reminders: &[DateTime<Utc>], due_at: DateTime<Utc>) -> Vec<JobChange> {
        let mut changes: Vec<_> = (0_u32..)
            .zip(reminders)
            .map(|(index, at)| self.set(JobKind::Remind, index.to_string(), *at, 0))
            .collect();
        changes.push(self.set(JobKind::Due, String::new(), due_at, 0));
        changes
    }

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{NaiveDate, TimeDelta};
    use lethe_domain::event::{
        CleanerRetried, CleanerSkipped, CleanerSucceeded, Due, HoldPlaced, HoldReleased,
        PlannedCleaner, Received, Reminded,
    };
    use lethe_domain::{CleanerName, DeadlineRule, Jurisdiction, Subject, SubjectRecord};

    use super::*;

    /// A cleaner `crm` retried from 10 s, doubling, capped at 100 s; shredding 2 h after the
    /// request closes.
    fn saga() -> Saga {
        let config = Config::parse(
            "[policy]\nretention_after_completion = \"2h\"\n\
             [[cleaners]]\nname = \"crm\"\nkind = \"manual\"\n\
             retry = { max_attempts = 5, initial = \"10s\", max = \"100s\", multiplier = 2.0 }\n",
        )
        .unwrap();
        Saga {
            config: Arc::new(config),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn request() -> RequestId {
        RequestId::from_uuid(uuid::Uuid::from_u128(7))
    }

    fn recorded(event: &Event, recorded_at: DateTime<Utc>) -> RecordedEvent {
        RecordedEvent {
            position: 1,
            transaction_id: 0,
            stream_id: request(),
            version: 1,
            event_type: event.event_type().to_owned(),
            schema_version: lethe_domain::event::SCHEMA_VERSION,
            payload: event.payload(),
            event_id: uuid::Uuid::from_u128(1),
            command_id: None,
            correlation_id: uuid::Uuid::from_u128(2),
            causation_id: None,
            actor: "test".to_owned(),
            recorded_at,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The jobs the saga decides for `event`, recorded at its time.
    fn jobs_for(event: &Event) -> Vec<JobChange> {
        saga()
            .handle(&recorded(event, event.occurred_at()))
            .unwrap()
    }

    fn set(kind: JobKind, key: &str, run_at: DateTime<Utc>, attempt: u32) -> JobChange {
        JobChange::Upsert(Job {
            request_id: request(),
            kind,
            key: key.to_owned(),
            run_at,
            attempt,
        })
    }

    fn gone(kind: JobKind, key: &str) -> JobChange {
        JobChange::Delete {
            request_id: request(),
            kind,
            key: key.to_owned(),
            up_to_attempt: u32::MAX,
        }
    }

    fn crm() -> CleanerName {
        CleanerName::parse("crm").unwrap()
    }

    fn failed(cleaner: &str, attempt: u32, retry_after: Option<u64>, exhausted: bool) -> Event {
        Event::CleanerFailed(CleanerFailed {
            cleaner: CleanerName::parse(cleaner).unwrap(),
            attempt,
            at: at(100),
            error: "503".to_owned(),
            status_code: Some(503),
            retryable: true,
            retry_after_seconds: retry_after,
            exhausted,
        })
    }

    /// The run time and attempt of the dispatch job the saga sets after `event`, if any.
    fn next_dispatch(changes: &[JobChange]) -> Option<(DateTime<Utc>, u32)> {
        changes.iter().find_map(|change| match change {
            JobChange::Upsert(job) if job.kind == JobKind::Dispatch => {
                Some((job.run_at, job.attempt))
            }
            _ => None,
        })
    }

    fn received_fixture() -> Event {
        Event::Received(Received {
            request_id: request(),
            subject: SubjectRecord::Plain(
                Subject::parse(BTreeMap::from([("user_id".to_owned(), "1".to_owned())])).unwrap(),
            ),
            jurisdiction: Jurisdiction::parse("gdpr").unwrap(),
            source: None,
            reason: None,
            external_id: None,
            tags: Vec::new(),
            received_at: at(0),
            due_at: at(3600),
            reminders: vec![at(600), at(1800)],
            deadline_rule: DeadlineRule::GDPR,
            deadline: NaiveDate::from_ymd_opt(2027, 2, 15).unwrap(),
            awaiting_approval: false,
        })
    }

    #[test]
    fn received_sets_a_reminder_job_each_and_the_due_job_at_the_end_of_the_grace_period() {
        let received = received_fixture();
        assert_eq!(
            jobs_for(&received),
            [
                set(JobKind::Remind, "0", at(600), 0),
                set(JobKind::Remind, "1", at(1800), 0),
                set(JobKind::Due, "", at(3600), 0),
            ]
        );
    }

    #[test]
    fn awaiting_approval_nothing_is_timed_until_the_approval_sets_the_grace_jobs() {
        let Event::Received(mut received) = received_fixture() else {
            unreachable!("the fixture is a Received")
        };
        received.awaiting_approval = true;
        received.reminders.clear();
        assert_eq!(jobs_for(&Event::Received(received)), []);
        let approved = Event::Approved(lethe_domain::event::Approved {
            at: at(5000),
            due_at: at(8600),
            reminders: vec![at(7000)],
            reason: None,
        });
        assert_eq!(
            jobs_for(&approved),
            [
                set(JobKind::Remind, "0", at(7000), 0),
                set(JobKind::Due, "", at(8600), 0),
            ]
        );
    }

    #[test]
    fn a_reminder_s_outcome_ends_its_jobs_and_an_old_reminded_hands_it_to_notify() {
        let sent = Event::ReminderSent(ReminderSent {
            index: 1,
            at: at(10),
            calls: 1,
        });
        assert_eq!(
            jobs_for(&sent),
            [gone(JobKind::Remind, "1"), gone(JobKind::Notify, "1")]
        );
        let reminded = Event::Reminded(Reminded {
            index: 0,
            at: at(5),
        });
        // The notify job runs when the old event was recorded, not when it happened.
        let changes = saga().handle(&recorded(&reminded, at(9))).unwrap();
        assert_eq!(
            changes,
            [
                gone(JobKind::Remind, "0"),
                set(JobKind::Notify, "0", at(9), 0)
            ]
        );
    }

    #[test]
    fn due_makes_one_dispatch_job_for_every_first_call_and_none_without_cleaners() {
        let planned = |name: &str| PlannedCleaner {
            name: CleanerName::parse(name).unwrap(),
            max_attempts: 5,
            stores: Vec::new(),
        };
        let due = |cleaners| {
            Event::Due(Due {
                at: at(50),
                cleaners,
                expedited: false,
                reason: None,
            })
        };
        assert_eq!(
            jobs_for(&due(vec![planned("crm"), planned("billing")])),
            [
                gone(JobKind::Due, ""),
                set(JobKind::Dispatch, "", at(50), 1)
            ]
        );
        assert_eq!(jobs_for(&due(Vec::new())), [gone(JobKind::Due, "")]);
    }

    #[test]
    fn a_failure_ends_its_callback_and_sets_the_next_attempt_after_the_cleaner_s_backoff() {
        let saga = saga();
        let jobs = Jobs {
            request_id: request(),
        };
        let Event::CleanerFailed(second) = failed("crm", 2, None, false) else {
            unreachable!()
        };
        let changes = saga.after_failure(&jobs, &second, 0.0);
        // Attempt 2 failed: the step is 10 s doubled once; no jitter is its lower half.
        assert_eq!(
            changes,
            [
                JobChange::Delete {
                    request_id: request(),
                    kind: JobKind::Callback,
                    key: "crm".to_owned(),
                    up_to_attempt: 2,
                },
                set(JobKind::Dispatch, "crm", at(110), 3),
            ]
        );
        // The most jitter is (almost) the whole step.
        let latest = next_dispatch(&saga.after_failure(&jobs, &second, 0.999_999)).unwrap();
        assert_eq!(latest.1, 3);
        assert!(latest.0 > at(119) && latest.0 <= at(120), "{latest:?}");
        // The cap holds for a late attempt: 10 s * 2^5 is capped at 100 s.
        let Event::CleanerFailed(sixth) = failed("crm", 6, None, false) else {
            unreachable!()
        };
        assert_eq!(
            next_dispatch(&saga.after_failure(&jobs, &sixth, 0.0)),
            Some((at(150), 7))
        );
    }

    #[test]
    fn the_jittered_backoff_stays_within_its_step_whatever_the_draw() {
        for _ in 0..200 {
            let (run_at, attempt) = next_dispatch(&jobs_for(&failed("crm", 1, None, false)))
                .expect("a dispatch job for attempt 2");
            assert_eq!(attempt, 2);
            // Attempt 1 failed at 100 s: the step is 10 s, the delay in its upper half.
            assert!(run_at >= at(105) && run_at <= at(110), "{run_at}");
        }
    }

    #[test]
    fn a_server_s_retry_after_is_a_lower_bound_and_the_cap_does_not_cut_it() {
        let changes = jobs_for(&failed("crm", 1, Some(500), false));
        assert_eq!(next_dispatch(&changes), Some((at(600), 2)));
    }

    #[test]
    fn an_unknown_cleaner_is_retried_with_the_default_policy() {
        // Not configured (any more): 60 s initial, so attempt 2 runs 30 to 60 s later.
        let (run_at, _) = next_dispatch(&jobs_for(&failed("gone", 1, None, false))).unwrap();
        let default = lethe_domain::RetryPolicy::default().initial;
        assert_eq!(default, Duration::from_secs(60));
        assert!(run_at >= at(130) && run_at <= at(160), "{run_at}");
    }

    #[test]
    fn an_exhausted_failure_sets_no_next_attempt() {
        assert_eq!(
            jobs_for(&failed("crm", 5, Some(1), true)),
            [JobChange::Delete {
                request_id: request(),
                kind: JobKind::Callback,
                key: "crm".to_owned(),
                up_to_attempt: 5,
            }]
        );
    }

    #[test]
    fn a_success_or_a_skip_ends_that_cleaner_s_jobs() {
        let succeeded = Event::CleanerSucceeded(CleanerSucceeded {
            cleaner: crm(),
            attempt: 2,
            at: at(1),
            deleted: None,
            detail: None,
        });
        let skipped = Event::CleanerSkipped(CleanerSkipped {
            cleaner: crm(),
            at: at(1),
            reason: "gone".to_owned(),
        });
        for event in [succeeded, skipped] {
            assert_eq!(
                jobs_for(&event),
                [
                    gone(JobKind::Dispatch, "crm"),
                    gone(JobKind::Callback, "crm")
                ]
            );
        }
    }

    #[test]
    fn a_release_or_a_retry_plans_again_through_the_due_job() {
        let released = Event::HoldReleased(HoldReleased {
            at: at(70),
            reason: None,
        });
        let retried = Event::CleanerRetried(CleanerRetried {
            cleaner: crm(),
            at: at(70),
            max_attempts: 10,
            reason: None,
        });
        for event in [released, retried] {
            assert_eq!(jobs_for(&event), [set(JobKind::Due, "", at(70), 0)]);
        }
        let held = Event::HoldPlaced(HoldPlaced {
            at: at(70),
            reason: "legal".to_owned(),
        });
        assert_eq!(jobs_for(&held), []);
    }

    #[test]
    fn closing_a_request_ends_its_jobs_and_sets_shredding_after_the_retention() {
        let closed = [
            Event::Completed(Completed {
                at: at(0),
                stores: Vec::new(),
            }),
            Event::Cancelled(Cancelled {
                at: at(0),
                reason: None,
            }),
            Event::Rejected(Rejected {
                at: at(0),
                reason: "spam".to_owned(),
            }),
        ];
        for event in closed {
            assert_eq!(
                jobs_for(&event),
                [
                    JobChange::DeleteAll {
                        request_id: request()
                    },
                    set(JobKind::Shred, "", at(0) + TimeDelta::hours(2), 0),
                ]
            );
        }
    }
}
