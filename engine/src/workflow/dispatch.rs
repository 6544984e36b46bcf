//! The dispatch worker: claims cleaner dispatch jobs, makes each request's attempts side by
//! side through the cleaners (within each cleaner's limits), and records their results in one
//! append per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use lethe_domain::state::{CleanerState, Phase, Request};
use lethe_domain::{CleanerName, Command, RequestId};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::workers::{by_request, JobOutcome, Outcomes, Workers};
use super::{batch, order};
use super::{micros, Job, JobChange, JobKind, WorkflowError, WorkflowStore};
use crate::app::{LoadedRequest, RequestError, SubjectAccess};
use crate::cleaners::{Attempt, AwaitedResult, Outcome};
use crate::store::{Checkpoint, EventMetadata, StoreError};
use crate::subscriptions::Sink;

impl Workers {
    /// Runs cleaner dispatches until `shutdown`, then waits for the calls in flight.
    pub async fn run_dispatch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let concurrency =
            usize::try_from(self.config.engine.dispatch_concurrency.max(1)).unwrap_or(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let refill = u32::try_from((concurrency / 4).max(1)).unwrap_or(1);
        // A job for all of a request's cleaners (ADR 10) takes a slot per configured cleaner,
        // so a claim asks for as many requests as there are slots for their calls.
        let per_request = self.config.cleaners.len().clamp(1, concurrency);
        let weight = |job: &Job| if job.dispatches_all() { per_request } else { 1 };
        while !*shutdown.borrow() {
            let free = u32::try_from(slots.available_permits()).unwrap_or(0);
            if free < refill {
                // (Nearly) every slot is busy: claim again as soon as a few calls have ended,
                // not a poll later, and not one job per claim (each claim is a commit).
                tokio::select! {
                    permits = slots.clone().acquire_many_owned(refill) => drop(permits),
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let jobs = match self
                .workflow
                .claim_jobs(
                    &[JobKind::Dispatch],
                    &self.owner,
                    Utc::now(),
                    self.dispatch_lease(),
                    (free / u32::try_from(per_request).unwrap_or(1)).max(1),
                )
                .await
            {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(error = %error, "claiming dispatch jobs failed");
                    Vec::new()
                }
            };
            let idle = jobs.is_empty();
            // A batched cleaner's jobs are one call per batch, taking one slot.
            let (batched, jobs): (Vec<Job>, Vec<Job>) = jobs
                .into_iter()
                .partition(|job| self.batch_of(job).is_some());
            if !batched.is_empty() {
                if let Ok(slot) = slots.clone().acquire_owned().await {
                    let this = self.clone();
                    tokio::spawn(async move { this.run_batches(batched, slot).await });
                }
            }
            // A request's cleaners are called side by side and their results recorded in one
            // append: one read of the request, one commit, no append racing another on the
            // same stream. (Claims come earliest first, and a request's dispatches share
            // their time, so they arrive together.) The claim's requests and subjects are
            // read with one query each, and its finished jobs removed with one statement.
            let mut groups = Vec::new();
            for group in by_request(jobs) {
                let n = group.iter().map(weight).sum::<usize>().min(concurrency);
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                let Ok(slot) = slots.clone().acquire_many_owned(n).await else {
                    break;
                };
                groups.push((group, slot));
            }
            if !groups.is_empty() {
                let this = self.clone();
                tokio::spawn(async move { this.run_dispatch_claim(groups).await });
            }
            if idle {
                tokio::select! {
                    () = tokio::time::sleep(self.poll_interval()) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        // Let the calls in flight record their results before the process exits.
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(self.dispatch_lease(), slots.acquire_many(all)).await;
    }

    /// Runs one claim of dispatch jobs, grouped by request, each group holding its slots
    /// until its calls are made and recorded.
    async fn run_dispatch_claim(&self, groups: Vec<(Vec<Job>, OwnedSemaphorePermit)>) {
        let ids: Vec<RequestId> = groups
            .iter()
            .map(|(group, _)| group[0].request_id)
            .collect();
        let (mut loaded, subjects) = match self.load_claim(&ids, &groups).await {
            Ok(read) => read,
            Err(error) => {
                // Left leased: they run again when the lease runs out.
                tracing::warn!(error = %error, jobs = groups.len(), "reading the claimed requests failed; the jobs will be retried");
                return;
            }
        };
        let runs = groups.iter().map(|(group, _)| {
            let id = group[0].request_id;
            let request = loaded.remove(&id);
            let subject = subjects.get(&id);
            self.run_dispatch_group(group, request, subject)
        });
        let outcomes = futures::future::join_all(runs).await;
        let mut jobs = Vec::new();
        for (group, slot) in groups {
            drop(slot);
            jobs.extend(group);
        }
        self.settle_all(&jobs, outcomes.into_iter().flatten().collect())
            .await;
    }

    /// The claimed requests, and the subjects of those with a cleaner that needs them.
    async fn load_claim(
        &self,
        ids: &[RequestId],
        groups: &[(Vec<Job>, OwnedSemaphorePermit)],
    ) -> Result<
        (
            HashMap<RequestId, LoadedRequest>,
            HashMap<RequestId, SubjectAccess>,
        ),
        WorkflowError,
    > {
        let loaded = self.requests.load_many(ids).await?;
        let wanted: Vec<&Request> = groups
            .iter()
            .filter(|(group, _)| {
                group.iter().any(|job| {
                    if job.dispatches_all() {
                        return self.cleaners.any_needs_subject();
                    }
                    CleanerName::parse(job.key.clone())
                        .is_ok_and(|name| self.cleaners.needs_subject(&name))
                })
            })
            .filter_map(|(group, _)| loaded.get(&group[0].request_id))
            .map(|l| &l.request)
            .collect();
        let subjects = if wanted.is_empty() {
            HashMap::new()
        } else {
            self.requests.subjects_of(&wanted).await?
        };
        Ok((loaded, subjects))
    }

    /// Runs the claimed dispatch jobs of one request, as read: calls its cleaners side by
    /// side, and records every result in one append.
    ///
    /// A job for all the request's cleaners (ADR 10) is finished once its calls are made:
    /// a call it cannot make or record now (a closed window, a cleaner's limit, a failed
    /// append) becomes that cleaner's own job, for the same attempt.
    async fn run_dispatch_group(
        &self,
        jobs: &[Job],
        loaded: Option<LoadedRequest>,
        subject: Option<&SubjectAccess>,
    ) -> Outcomes {
        let Some(first) = jobs.first() else {
            return Vec::new();
        };
        let id = first.request_id;
        let Some(loaded) = loaded else {
            return jobs.iter().map(|_| Ok(JobOutcome::Finish)).collect();
        };
        let calls = calls(jobs, &loaded.request);
        let steps =
            futures::future::join_all(calls.iter().map(|call| {
                self.dispatch_step(call.cleaner.clone(), call.attempt, &loaded, subject)
            }))
            .await;
        let commands: Vec<Command> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Record(command) => Some(command.clone()),
                Step::Settled(_) => None,
            })
            .collect();
        let recorded: Result<(), String> = if commands.is_empty() {
            Ok(())
        } else {
            let metadata = EventMetadata::new("system:dispatcher");
            match self
                .requests
                .execute_all(id, &metadata, Some(loaded), &commands)
                .await
            {
                // A refused result (the cleaner was skipped meanwhile, say) leaves nothing
                // to do either.
                Ok(_) | Err(RequestError::NotFound(_)) => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        };
        let mut outcomes: Outcomes = jobs.iter().map(|_| Ok(JobOutcome::Finish)).collect();
        let mut own_jobs = Vec::new();
        for (call, step) in calls.into_iter().zip(steps) {
            let outcome = match step {
                Step::Settled(outcome) => outcome,
                Step::Record(_) => match &recorded {
                    Ok(()) => Ok(JobOutcome::Finish),
                    Err(error) => Err(StoreError::Downstream(error.clone()).into()),
                },
            };
            if !jobs[call.job].dispatches_all() {
                outcomes[call.job] = outcome;
                continue;
            }
            let run_at = match outcome {
                Ok(JobOutcome::Finish) => continue,
                Ok(JobOutcome::Reschedule(at, _)) => at,
                // As if its own job's lease had run out.
                Err(_) => Utc::now() + micros(self.dispatch_lease()),
            };
            own_jobs.push(JobChange::Ensure(Job {
                request_id: id,
                kind: JobKind::Dispatch,
                key: call.cleaner.to_string(),
                run_at,
                attempt: call.attempt,
            }));
        }
        if !own_jobs.is_empty() {
            if let Err(error) = self.workflow.apply(&own_jobs).await {
                // The job for all stays leased and runs again: what was recorded is not
                // called again, the rest is.
                for (job, outcome) in jobs.iter().zip(&mut outcomes) {
                    if job.dispatches_all() {
                        *outcome = Err(StoreError::Downstream(error.to_string()).into());
                    }
                }
            }
        }
        outcomes
    }

    /// Checks one call against the request and the cleaner's limits and, if it is still
    /// wanted, makes it: what is left is the result to record, if any.
    async fn dispatch_step(
        &self,
        cleaner: CleanerName,
        attempt: u32,
        loaded: &LoadedRequest,
        subject: Option<&SubjectAccess>,
    ) -> Step {
        let now = Utc::now();
        let request = &loaded.request;
        if !still_wanted(request, &cleaner, attempt)
            || order::blocked(&self.config, request, &cleaner)
        {
            // A blocked call is made once what it waits for is done: the saga sets its job.
            return Step::Settled(Ok(JobOutcome::Finish));
        }
        if let Some(batch) = self.config.cleaner(&cleaner).and_then(|c| c.batch) {
            return batch::first_attempt_later(batch, attempt);
        }
        // Only the identifiers this cleaner receives (data minimisation).
        let subject = match subject {
            Some(SubjectAccess::Clear(subject)) => {
                Some(order::identifiers_for(&self.config, &cleaner, subject))
            }
            _ => None,
        };
        let needs_subject = self.cleaners.needs_subject(&cleaner);
        if needs_subject && subject.as_ref().is_some_and(BTreeMap::is_empty) {
            let outcome = Outcome::Succeeded {
                at: now,
                deleted: None,
                detail: Some(order::NO_IDENTIFIERS.to_owned()),
            };
            return self.recorded(&cleaner, attempt, request.id, outcome).await;
        }
        let call = Attempt {
            request,
            cleaner: &cleaner,
            attempt,
            subject: subject.as_ref(),
            due: loaded.events.iter().rev().find(|e| e.event_type == "Due"),
            public_url: &self.public_url,
            now,
        };
        let Some(kind) = self.cleaners.get(&cleaner) else {
            let outcome = call.failed(format!("cleaner {cleaner} is no longer configured"));
            return self.recorded(&cleaner, attempt, request.id, outcome).await;
        };
        let _in_flight = match self.limits.admit(&cleaner, now, self.poll_interval()) {
            Ok(permit) => permit,
            Err(retry_at) => return Step::Settled(Ok(JobOutcome::Reschedule(retry_at, attempt))),
        };
        match kind.attempt(call).await {
            Ok(outcome) => self.recorded(&cleaner, attempt, request.id, outcome).await,
            // Nothing was handed over: the job runs again after its lease.
            Err(error) => Step::Settled(Err(error.into())),
        }
    }

    /// What an attempt's outcome leaves to do: a result to record, or the deadline of a
    /// result awaited.
    pub(super) async fn recorded(
        &self,
        cleaner: &CleanerName,
        attempt: u32,
        request_id: RequestId,
        outcome: Outcome,
    ) -> Step {
        let cleaner = cleaner.clone();
        match outcome {
            Outcome::Succeeded {
                at,
                deleted,
                detail,
            } => Step::Record(Command::RecordCleanerSuccess {
                cleaner,
                attempt,
                at,
                deleted,
                detail,
            }),
            Outcome::Failed {
                at,
                error,
                status_code,
                retryable,
                retry_after,
            } => Step::Record(Command::RecordCleanerFailure {
                cleaner,
                attempt,
                at,
                error,
                status_code,
                retryable,
                retry_after_seconds: retry_after.map(|d| d.as_secs()),
            }),
            Outcome::Accepted { deadline } => {
                let awaited = AwaitedResult {
                    request_id,
                    cleaner,
                    attempt,
                    deadline,
                };
                let set = self.workflow.apply(&[callback_job(&awaited)]).await;
                Step::Settled(set.map(|()| JobOutcome::Finish).map_err(Into::into))
            }
            Outcome::Awaiting => Step::Settled(Ok(JobOutcome::Finish)),
        }
    }
}

/// Whether `cleaner`'s `attempt` is still to be made: the request is being cleaned and not on
/// hold (releasing the hold re-plans the cleaners still pending), and the cleaner is pending
/// with this as its next attempt.
pub(super) fn still_wanted(request: &Request, cleaner: &CleanerName, attempt: u32) -> bool {
    let Phase::Cleaning(cleaning) = &request.phase else {
        return false;
    };
    let Some(progress) = cleaning.cleaners.get(cleaner) else {
        return false;
    };
    progress.state == CleanerState::Pending
        && progress.next_attempt() == attempt
        && request.hold.is_none()
}

/// The job that fails an awaited result's attempt at its deadline unless the result came.
pub fn callback_job(awaited: &AwaitedResult) -> JobChange {
    JobChange::Upsert(Job {
        request_id: awaited.request_id,
        kind: JobKind::Callback,
        key: awaited.cleaner.to_string(),
        run_at: awaited.deadline,
        attempt: awaited.attempt,
    })
}

/// What a dispatch job came to before the group's results are recorded.
pub(super) enum Step {
    /// Settled without a new event.
    Settled(Result<JobOutcome, WorkflowError>),
    /// Record this result; the job is finished once it is recorded (or refused).
    Record(Command),
}

/// One cleaner call that a request's claimed dispatch jobs stand for.
struct Call {
    /// The index of the job it is made for.
    job: usize,
    cleaner: CleanerName,
    attempt: u32,
}

/// The calls that one request's claimed dispatch jobs stand for: a cleaner's own job is its
/// call; the job for all (ADR 10) is attempt 1 of each planned cleaner, unless the claim holds
/// that cleaner's own job too (`dispatch_step` passes over a cleaner already past attempt 1,
/// as it does for any call no longer wanted). A key that names no cleaner stands for nothing,
/// and its job is finished.
fn calls(jobs: &[Job], request: &Request) -> Vec<Call> {
    let mut calls = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        if !job.dispatches_all() {
            if let Ok(cleaner) = CleanerName::parse(job.key.clone()) {
                calls.push(Call {
                    job: index,
                    cleaner,
                    attempt: job.attempt,
                });
            }
            continue;
        }
        let Phase::Cleaning(cleaning) = &request.phase else {
            continue;
        };
        let without_own_job = cleaning
            .cleaners
            .keys()
            .filter(|name| !jobs.iter().any(|j| j.key == name.as_str()));
        calls.extend(without_own_job.map(|name| Call {
            job: index,
            cleaner: name.clone(),
            attempt: 1,
        }));
    }
    calls
}

/// The workflow's jobs as where the Kafka relay's batches go: each result it now awaits is a
/// callback job, written with the relay's checkpoint.
#[derive(Debug, Clone)]
pub struct CallbackJobs(pub Arc<dyn WorkflowStore>);

#[async_trait]
impl Sink<AwaitedResult> for CallbackJobs {
    async fn commit(
        &self,
        name: &str,
        owner: &str,
        checkpoint: Checkpoint,
        awaited: &[AwaitedResult],
    ) -> Result<bool, StoreError> {
        let changes: Vec<_> = awaited.iter().map(callback_job).collect();
        self.0
            .commit_subscription(name, owner, checkpoint, &changes)
            .await
    }
}
