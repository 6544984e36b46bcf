//! The timer worker: jobs that run at a time. Reminders (through the notifier, `notifier`),
//! the end of the grace period (`due`: make the request due, or re-plan its cleaners after a
//! hold release or an admin retry), callback deadlines and shredding.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lethe_domain::state::{CleanerState, Phase};
use lethe_domain::{CleanerName, Command, RequestId};
use tokio::sync::watch;

use super::workers::{by_request, JobOutcome, Outcomes, Workers};
use super::{micros, Job, JobChange, JobKind, WorkflowError};
use crate::app::planning::plan_cleaners;
use crate::app::{LoadedRequest, RequestError};
use crate::store::EventMetadata;

/// Timer jobs claimed at once (one statement), and settled at once when they have all run.
const CLAIM_BATCH: u32 = 256;
/// Requests whose timer jobs run at once: their appends share commits (group commit).
const TIMER_CONCURRENCY: usize = 64;
const PENDING_REPORT_EVERY: Duration = Duration::from_secs(5);
/// Who records what a timer decided.
const TIMERS_ACTOR: &str = "system:timers";

impl Workers {
    /// Runs timer jobs until `shutdown`.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let idle = self.run_timer_round(Utc::now()).await == 0;
            if idle {
                self.report_pending().await;
                tokio::select! {
                    () = tokio::time::sleep(self.poll_interval()) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Claims the timer jobs due at `now` and runs them as at `now`; returns how many it
    /// claimed. [`Workers::run_timers`] calls it with the clock; a test may call it with any
    /// time, to cross a lease or a grace period without waiting for it.
    pub async fn run_timer_round(&self, now: DateTime<Utc>) -> usize {
        let kinds = [
            JobKind::Remind,
            JobKind::Due,
            JobKind::Notify,
            JobKind::Callback,
            JobKind::Shred,
            JobKind::Completion,
        ];
        let claimed = self
            .workflow
            .claim_jobs(&kinds, &self.owner, now, self.lease(), CLAIM_BATCH)
            .await;
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(error = %error, "claiming timer jobs failed");
                Vec::new()
            }
        };
        let count = jobs.len();
        // Requests side by side, each request's jobs in claim order (a reminder before the
        // Due of the same request).
        // The round's requests are read with one query (each request's first job gets
        // it as read; a later job of the same request reads it again, after the first).
        let groups = by_request(jobs);
        let ids: Vec<RequestId> = groups.iter().map(|g| g[0].request_id).collect();
        let mut preloaded = match self.requests.load_many(&ids).await {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(error = %error, "reading the round's requests failed; reading them one by one");
                HashMap::new()
            }
        };
        // The round's clock: `now` as it started, plus the time since.
        let started = std::time::Instant::now();
        let clock = move || now + micros(started.elapsed());
        let done: Vec<(Vec<Job>, Outcomes)> = futures::stream::iter(groups)
            .map(|group| {
                let mut first = preloaded.remove(&group[0].request_id);
                async move {
                    let mut outcomes = Vec::with_capacity(group.len());
                    for job in &group {
                        outcomes.push(self.run_timer(job, clock(), first.take()).await);
                    }
                    (group, outcomes)
                }
            })
            .buffer_unordered(TIMER_CONCURRENCY)
            .collect()
            .await;
        // The whole round settled at once: one statement for the finished jobs.
        let (jobs, outcomes): (Vec<Vec<Job>>, Vec<Outcomes>) = done.into_iter().unzip();
        self.settle_all(
            &jobs.into_iter().flatten().collect::<Vec<_>>(),
            outcomes.into_iter().flatten().collect(),
        )
        .await;
        count
    }

    /// Publishes the pending job counts, at most every few seconds.
    async fn report_pending(&self) {
        let now = std::time::Instant::now();
        {
            let mut last = self
                .last_pending_report
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| now.duration_since(at) < PENDING_REPORT_EVERY) {
                return;
            }
            *last = Some(now);
        }
        if let Ok(counts) = self.workflow.pending_jobs().await {
            for kind in JobKind::ALL {
                let count = counts
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map_or(0, |(_, n)| *n);
                crate::telemetry::metrics::jobs_pending(kind.as_str(), count);
            }
        }
    }

    /// Runs one timer job at `now`; `preloaded` is its request as read with the rest of the
    /// round.
    async fn run_timer(
        &self,
        job: &Job,
        now: DateTime<Utc>,
        preloaded: Option<LoadedRequest>,
    ) -> Result<JobOutcome, WorkflowError> {
        let command = match job.kind {
            JobKind::Remind | JobKind::Notify => {
                return self.run_reminder(job, now, preloaded).await;
            }
            JobKind::Callback => {
                let Ok(cleaner) = CleanerName::parse(job.key.clone()) else {
                    return Ok(JobOutcome::Finish);
                };
                Command::RecordCleanerFailure {
                    cleaner,
                    attempt: job.attempt,
                    at: now,
                    error: "the cleaner accepted the request but sent no result before callback_timeout"
                        .to_owned(),
                    status_code: None,
                    retryable: true,
                    retry_after_seconds: None,
                }
            }
            JobKind::Due => return self.run_due(job, now, preloaded).await,
            JobKind::Completion => return self.run_completion(job, now, preloaded).await,
            JobKind::Shred => {
                return match self
                    .requests
                    .shred(job.request_id, &EventMetadata::new(TIMERS_ACTOR))
                    .await
                {
                    Ok(_) | Err(RequestError::Rejected(_) | RequestError::NotFound(_)) => {
                        Ok(JobOutcome::Finish)
                    }
                    Err(error) => Err(error.into()),
                };
            }
            JobKind::Dispatch => return Ok(JobOutcome::Finish),
        };
        match preloaded {
            Some(loaded) => self.record(loaded, TIMERS_ACTOR, command).await,
            None => {
                self.decide(job.request_id, TIMERS_ACTOR, |_| command.clone())
                    .await
            }
        }
    }

    /// The end of the grace period, or a re-plan after a hold release or an admin retry.
    async fn run_due(
        &self,
        job: &Job,
        now: DateTime<Utc>,
        preloaded: Option<LoadedRequest>,
    ) -> Result<JobOutcome, WorkflowError> {
        let Some(loaded) = self.loaded(job.request_id, preloaded).await? else {
            return Ok(JobOutcome::Finish);
        };
        let request = &loaded.request;
        match &request.phase {
            // Held, or awaiting approval: the release or the approval sets the job again.
            Phase::Grace if request.hold.is_some() || request.awaiting_approval => {
                Ok(JobOutcome::Finish)
            }
            Phase::Grace if now < request.due_at => {
                Ok(JobOutcome::Reschedule(request.due_at, job.attempt))
            }
            Phase::Grace => {
                let command = Command::MarkDue {
                    at: now,
                    cleaners: plan_cleaners(&self.config, request),
                    expedite: false,
                    reason: None,
                };
                self.record(loaded, TIMERS_ACTOR, command).await
            }
            Phase::Cleaning(cleaning) if request.hold.is_none() => {
                let busy: Vec<String> = self
                    .workflow
                    .jobs_of(job.request_id)
                    .await?
                    .into_iter()
                    .filter(|j| matches!(j.kind, JobKind::Dispatch | JobKind::Callback))
                    .map(|j| j.key)
                    .collect();
                // A job for all the cleaners (ADR 10) still makes every first attempt.
                let first_attempts_planned = busy.iter().any(String::is_empty);
                let changes: Vec<JobChange> = cleaning
                    .cleaners
                    .iter()
                    .filter(|(name, progress)| {
                        progress.state == CleanerState::Pending
                            && !busy.iter().any(|b| b == name.as_str())
                            && !(first_attempts_planned && progress.next_attempt() == 1)
                    })
                    .map(|(name, progress)| {
                        JobChange::Ensure(Job {
                            request_id: job.request_id,
                            kind: JobKind::Dispatch,
                            key: name.to_string(),
                            run_at: now,
                            attempt: progress.next_attempt(),
                        })
                    })
                    .collect();
                self.workflow.apply(&changes).await?;
                Ok(JobOutcome::Finish)
            }
            _ => Ok(JobOutcome::Finish),
        }
    }
}
