//! Batched cleaners (`batch = { max, wait }`, ADR 27): the dispatch jobs of one cleaner claimed
//! together, their requests' attempts made in one call (`Cleaner::attempt_batch`, admitted once
//! against the cleaner's limits), and each request's outcome recorded in its own append.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use lethe_domain::{CleanerName, Command, RequestId};
use tokio::sync::OwnedSemaphorePermit;

use super::dispatch::{still_wanted, Step};
use super::workers::{JobOutcome, Outcomes, Workers};
use super::{micros, order, Job, WorkflowError};
use crate::app::{LoadedRequest, RequestError, SubjectAccess};
use crate::cleaners::{Attempt, CleanerError};
use crate::config::BatchConfig;
use crate::store::{EventMetadata, StoreError};
use crate::telemetry::metrics;

/// One lock per batched cleaner, held while a batch is topped up: claims of the same cleaner
/// that arrive together (a dispatch claim while another batch is being filled) fill one batch
/// after the other instead of splitting the due jobs between them.
#[derive(Debug, Default)]
pub struct Batching {
    filling: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Batching {
    fn lock_for(&self, cleaner: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut filling = self
            .filling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        filling.entry(cleaner.to_owned()).or_default().clone()
    }
}

/// One request's attempt, ready to join the call.
struct Ready {
    job: usize,
    subject: Option<BTreeMap<String, String>>,
}

impl Workers {
    /// The `batch` settings of the cleaner a dispatch job calls, if it is batched (the job
    /// for all of a request's cleaners is never a batch job).
    pub(super) fn batch_of(&self, job: &Job) -> Option<BatchConfig> {
        if job.dispatches_all() {
            return None;
        }
        let name = CleanerName::parse(job.key.clone()).ok()?;
        self.config.cleaner(&name)?.batch
    }

    /// Runs claimed jobs of batched cleaners: per cleaner, tops the claim up with the jobs of
    /// that cleaner due within its `wait`, and makes the calls, `max` requests each.
    pub(super) async fn run_batches(&self, jobs: Vec<Job>, slot: OwnedSemaphorePermit) {
        let mut by_cleaner: BTreeMap<String, Vec<Job>> = BTreeMap::new();
        for job in jobs {
            by_cleaner.entry(job.key.clone()).or_default().push(job);
        }
        let runs = by_cleaner
            .into_values()
            .map(|jobs| self.run_cleaner_batch(jobs));
        futures::future::join_all(runs).await;
        drop(slot);
    }

    async fn run_cleaner_batch(&self, mut jobs: Vec<Job>) {
        let Some(batch) = jobs.first().and_then(|job| self.batch_of(job)) else {
            return;
        };
        let max = usize::try_from(batch.max.max(1)).unwrap_or(usize::MAX);
        let lock = self.batching.lock_for(&jobs[0].key);
        let filling = lock.lock().await;
        if jobs.len() < max {
            let now = Utc::now();
            let more = u32::try_from(max - jobs.len()).unwrap_or(u32::MAX);
            match self
                .workflow
                .claim_batch(
                    &jobs[0].key,
                    &self.owner,
                    now,
                    now + micros(batch.wait.0),
                    self.dispatch_lease(),
                    more,
                )
                .await
            {
                Ok(joined) => jobs.extend(joined),
                Err(error) => tracing::warn!(error = %error, "claiming a batch's jobs failed"),
            }
        }
        drop(filling);
        let calls = jobs.chunks(max).map(|chunk| self.run_batch(chunk));
        futures::future::join_all(calls).await;
    }

    /// One call for these jobs of one cleaner; each request's result recorded on its own.
    async fn run_batch(&self, jobs: &[Job]) {
        let ids: Vec<RequestId> = jobs.iter().map(|j| j.request_id).collect();
        let Ok(cleaner) = CleanerName::parse(jobs[0].key.clone()) else {
            return;
        };
        let (mut loaded, subjects) = match self.load_batch(&cleaner, &ids).await {
            Ok(read) => read,
            Err(error) => {
                // Left leased: they run again when the lease runs out.
                tracing::warn!(error = %error, jobs = jobs.len(), "reading a batch's requests failed; the jobs will be retried");
                return;
            }
        };
        let mut steps: Vec<Option<Step>> = jobs.iter().map(|_| None).collect();
        let mut ready = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            match self.prepare(&cleaner, job, loaded.get(&job.request_id), &subjects) {
                Ok(subject) => ready.push(Ready {
                    job: index,
                    subject,
                }),
                Err(step) => steps[index] = Some(step),
            }
        }
        if !ready.is_empty() {
            let made = self.call_batch(&cleaner, jobs, &ready, &loaded).await;
            for (item, step) in ready.iter().zip(made) {
                steps[item.job] = Some(step);
            }
        }
        let records = jobs.iter().zip(&mut steps).map(|(job, step)| {
            let step = step.take();
            let loaded = loaded.remove(&job.request_id);
            async move { self.record_step(job, loaded, step).await }
        });
        let outcomes: Outcomes = futures::future::join_all(records).await;
        self.settle_all(jobs, outcomes).await;
    }

    /// The batch's requests, and their subjects if the cleaner is sent them.
    async fn load_batch(
        &self,
        cleaner: &CleanerName,
        ids: &[RequestId],
    ) -> Result<
        (
            HashMap<RequestId, LoadedRequest>,
            HashMap<RequestId, SubjectAccess>,
        ),
        WorkflowError,
    > {
        let loaded = self.requests.load_many(ids).await?;
        let subjects = if self.cleaners.needs_subject(cleaner) && !loaded.is_empty() {
            let requests: Vec<_> = loaded.values().map(|l| &l.request).collect();
            self.requests.subjects_of(&requests).await?
        } else {
            HashMap::new()
        };
        Ok((loaded, subjects))
    }

    /// Whether a job's attempt joins the call (with the identifiers it carries), or what it
    /// comes to without one.
    #[allow(clippy::result_large_err)] // built once per request of a batch, never propagated
    fn prepare(
        &self,
        cleaner: &CleanerName,
        job: &Job,
        loaded: Option<&LoadedRequest>,
        subjects: &HashMap<RequestId, SubjectAccess>,
    ) -> Result<Option<BTreeMap<String, String>>, Step> {
        let finished = || Step::Settled(Ok(JobOutcome::Finish));
        let Some(loaded) = loaded else {
            return Err(finished());
        };
        let request = &loaded.request;
        if !still_wanted(request, cleaner, job.attempt)
            || order::blocked(&self.config, request, cleaner)
        {
            return Err(finished());
        }
        let subject = match subjects.get(&job.request_id) {
            Some(SubjectAccess::Clear(subject)) => {
                Some(order::identifiers_for(&self.config, cleaner, subject))
            }
            _ => None,
        };
        if self.cleaners.needs_subject(cleaner) && subject.as_ref().is_some_and(BTreeMap::is_empty)
        {
            return Err(Step::Record(Command::RecordCleanerSuccess {
                cleaner: cleaner.clone(),
                attempt: job.attempt,
                at: Utc::now(),
                deleted: None,
                detail: Some(order::NO_IDENTIFIERS.to_owned()),
            }));
        }
        Ok(subject)
    }

    /// Admits the call once and makes it: one step per ready attempt, in order.
    async fn call_batch(
        &self,
        cleaner: &CleanerName,
        jobs: &[Job],
        ready: &[Ready],
        loaded: &HashMap<RequestId, LoadedRequest>,
    ) -> Vec<Step> {
        let now = Utc::now();
        let attempts: Vec<Attempt<'_>> = ready
            .iter()
            .map(|item| {
                let job = &jobs[item.job];
                let loaded = &loaded[&job.request_id];
                Attempt {
                    request: &loaded.request,
                    cleaner,
                    attempt: job.attempt,
                    subject: item.subject.as_ref(),
                    due: loaded.events.iter().rev().find(|e| e.event_type == "Due"),
                    public_url: &self.public_url,
                    now,
                }
            })
            .collect();
        let Some(kind) = self.cleaners.get(cleaner) else {
            let failed = attempts.iter().map(|attempt| {
                let outcome = attempt.failed(format!("cleaner {cleaner} is no longer configured"));
                self.recorded(cleaner, attempt.attempt, attempt.request.id, outcome)
            });
            return futures::future::join_all(failed).await;
        };
        let _in_flight = match self.limits.admit(cleaner, now, self.poll_interval()) {
            Ok(permit) => permit,
            Err(retry_at) => {
                return attempts
                    .iter()
                    .map(|a| Step::Settled(Ok(JobOutcome::Reschedule(retry_at, a.attempt))))
                    .collect();
            }
        };
        metrics::cleaner_batch(cleaner.as_str(), kind.kind(), attempts.len());
        let mut results = kind.attempt_batch(&attempts).await;
        // A kind that answers for fewer attempts than it was given made none of the rest.
        results.resize_with(attempts.len(), || {
            Err(CleanerError::Unavailable(
                "the cleaner gave no result for this attempt".to_owned(),
            ))
        });
        let steps = attempts
            .iter()
            .zip(results)
            .map(|(attempt, result)| async move {
                match result {
                    Ok(outcome) => {
                        self.recorded(cleaner, attempt.attempt, attempt.request.id, outcome)
                            .await
                    }
                    // Nothing was handed over: the job runs again after its lease.
                    Err(error) => Step::Settled(Err(error.into())),
                }
            });
        futures::future::join_all(steps).await
    }

    /// Records one request's result in its own append; what becomes of its job.
    async fn record_step(
        &self,
        job: &Job,
        loaded: Option<LoadedRequest>,
        step: Option<Step>,
    ) -> Result<JobOutcome, WorkflowError> {
        match step {
            None => Ok(JobOutcome::Finish),
            Some(Step::Settled(outcome)) => outcome,
            Some(Step::Record(command)) => {
                let metadata = EventMetadata::new("system:dispatcher");
                match self
                    .requests
                    .execute_all(job.request_id, &metadata, loaded, &[command])
                    .await
                {
                    Ok(_) | Err(RequestError::NotFound(_)) => Ok(JobOutcome::Finish),
                    Err(error) => Err(StoreError::Downstream(error.to_string()).into()),
                }
            }
        }
    }
}

/// A batched cleaner's first attempt, met in the job for all of a request's cleaners: it
/// becomes the cleaner's own job, `wait` from now, to be claimed with others.
pub(super) fn first_attempt_later(batch: BatchConfig, attempt: u32) -> Step {
    Step::Settled(Ok(JobOutcome::Reschedule(
        Utc::now() + micros(batch.wait.0),
        attempt,
    )))
}
