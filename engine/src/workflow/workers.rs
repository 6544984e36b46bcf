//! The workers that run jobs: timers (`timers`: reminders through the `notifier`, the end of
//! the grace period, callback deadlines, shredding) and cleaner dispatches (`dispatch`, within
//! each cleaner's `limits`).
//!
//! A worker claims a job with a lease, re-reads the request from the log, decides through the
//! aggregate, and only then removes the job. If the process dies in between, the lease runs
//! out and the job runs again: every step is idempotent (a reminder's outcome or Due recorded
//! twice is a no-op, a cleaner or the notifier is called again with the same
//! `Idempotency-Key`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lethe_domain::state::Request;
use lethe_domain::{Command, RequestId};

use super::limits::CleanerLimits;
use super::{Job, WorkflowError, WorkflowStore};
use crate::app::{LoadedRequest, RequestError, Requests};
use crate::cleaners::Registry;
use crate::config::Config;
use crate::store::master_key::MasterKey;
use crate::store::EventMetadata;

#[derive(Debug)]
pub struct Workers {
    pub requests: Requests,
    pub workflow: Arc<dyn WorkflowStore>,
    pub config: Arc<Config>,
    pub key: MasterKey,
    /// For the notifier.
    pub client: reqwest::Client,
    /// This process's identity as a lease owner.
    pub owner: String,
    /// Where cleaners reach this engine, for `callback_url`.
    pub public_url: String,
    /// The configured cleaners.
    pub(super) cleaners: Registry,
    pub(super) limits: CleanerLimits,
    pub(super) batching: super::batch::Batching,
    pub(super) last_pending_report: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What becomes of a job that ran.
pub(super) enum JobOutcome {
    /// The job is done: remove it.
    Finish,
    /// Run it again at this time, with this attempt.
    Reschedule(DateTime<Utc>, u32),
}

/// Each job's outcome, in the order of its jobs.
pub(super) type Outcomes = Vec<Result<JobOutcome, WorkflowError>>;

impl Workers {
    /// `cleaners` holds every configured cleaner (the composition root builds it).
    pub fn new(
        requests: Requests,
        workflow: Arc<dyn WorkflowStore>,
        config: Arc<Config>,
        key: MasterKey,
        owner: String,
        public_url: String,
        cleaners: Registry,
    ) -> Self {
        let limits = CleanerLimits::new(&config);
        Self {
            requests,
            workflow,
            config,
            key,
            client: crate::cleaners::http::client(),
            owner,
            public_url,
            cleaners,
            limits,
            batching: super::batch::Batching::default(),
            last_pending_report: std::sync::Mutex::new(None),
        }
    }

    pub(super) fn lease(&self) -> Duration {
        self.config.engine.lease.0
    }

    /// A dispatch lease outlives the slowest cleaner call, so a live call is never re-claimed.
    pub(super) fn dispatch_lease(&self) -> Duration {
        let slowest = self
            .config
            .cleaners
            .iter()
            .map(|c| c.timeout.0)
            .max()
            .unwrap_or_default();
        self.lease().max(slowest + Duration::from_secs(5))
    }

    pub(super) fn poll_interval(&self) -> Duration {
        self.config.engine.poll_interval.0
    }

    async fn settle(&self, job: &Job, outcome: Result<JobOutcome, WorkflowError>) {
        let result = match outcome {
            Ok(JobOutcome::Finish) => self.workflow.finish_job(job, &self.owner).await,
            Ok(JobOutcome::Reschedule(at, attempt)) => {
                self.workflow
                    .reschedule_job(job, &self.owner, at, attempt)
                    .await
            }
            Err(error) => {
                // Left leased: it runs again when the lease runs out.
                tracing::warn!(
                    request.id = %job.request_id, job.kind = %job.kind, job.key = %job.key,
                    error = %error, "job failed; it will be retried"
                );
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::warn!(request.id = %job.request_id, error = %error, "could not settle a job");
        }
    }

    /// Settles each job with its outcome: the finished ones with one statement.
    pub(super) async fn settle_all(&self, jobs: &[Job], outcomes: Outcomes) {
        let mut finished = Vec::new();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            match outcome {
                Ok(JobOutcome::Finish) => finished.push(job.clone()),
                other => self.settle(job, other).await,
            }
        }
        if finished.is_empty() {
            return;
        }
        if let Err(error) = self.workflow.finish_jobs(&finished, &self.owner).await {
            tracing::warn!(jobs = finished.len(), error = %error, "could not settle jobs");
        }
    }

    /// Runs a command; a domain rejection means there is nothing (more) to do.
    pub(super) async fn decide(
        &self,
        id: RequestId,
        actor: &str,
        make: impl Fn(&Request) -> Command + Send + Sync,
    ) -> Result<JobOutcome, WorkflowError> {
        match self
            .requests
            .execute(id, &EventMetadata::new(actor), make)
            .await
        {
            Ok(_) | Err(RequestError::Rejected(_) | RequestError::NotFound(_)) => {
                Ok(JobOutcome::Finish)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Records a command on the request as just read (read again only if it changed since);
    /// a domain rejection means there is nothing (more) to do.
    pub(super) async fn record(
        &self,
        loaded: LoadedRequest,
        actor: &str,
        command: Command,
    ) -> Result<JobOutcome, WorkflowError> {
        let id = loaded.request.id;
        let metadata = EventMetadata::new(actor);
        match self
            .requests
            .execute_all(id, &metadata, Some(loaded), &[command])
            .await
        {
            Ok(_) | Err(RequestError::NotFound(_)) => Ok(JobOutcome::Finish),
            Err(error) => Err(error.into()),
        }
    }

    /// The request as read with its round, or read now.
    pub(super) async fn loaded(
        &self,
        id: RequestId,
        preloaded: Option<LoadedRequest>,
    ) -> Result<Option<LoadedRequest>, WorkflowError> {
        match preloaded {
            Some(loaded) => Ok(Some(loaded)),
            None => Ok(self.requests.load(id).await?),
        }
    }
}

/// Jobs grouped by request, in order of each request's first job, each group in claim order.
pub(super) fn by_request(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    let mut slot: HashMap<RequestId, usize> = HashMap::new();
    for job in jobs {
        let at = *slot.entry(job.request_id).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(job);
    }
    groups
}
