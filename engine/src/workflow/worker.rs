//! The workers that run jobs: timers (reminders, the end of the grace period, notifier calls,
//! callback deadlines) and cleaner dispatches.
//!
//! A worker claims a job with a lease, re-reads the request from the log, decides through the
//! aggregate, and only then removes the job. If the process dies in between, the lease runs
//! out and the job runs again: every step is idempotent (a reminder's outcome or Due recorded
//! twice is a no-op, a cleaner or the notifier is called again with the same
//! `Idempotency-Key`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lethe_domain::event::{PlannedCleaner, ReminderNotSentReason};
use lethe_domain::state::{CleanerState, Phase, ReminderOutcome, Request};
use lethe_domain::{CleanerName, Command, RequestId, RetryPolicy};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::{micros, Job, JobChange, JobKind, WorkflowStore};
use crate::app::{LoadedRequest, RequestError, Requests, SubjectAccess};
use crate::cleaners::http::{notify, CallOutcome, CleanerCall, HttpCleaner};
use crate::config::{CleanerKind, Config, HttpCleanerConfig};
use crate::store::master_key::MasterKey;
use crate::store::{EventMetadata, StoreError};

/// The backoff between calls to a notifier that failed: doubling from 1 s to at most 5 min,
/// jittered; tried until the reminder is moot (ADR 16), so `max_attempts` plays no part.
const NOTIFY_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial: Duration::from_secs(1),
    max: Duration::from_secs(300),
    multiplier: 2.0,
};
/// Who records a reminder's outcome.
const REMINDER_ACTOR: &str = "system:reminders";
/// Timer jobs claimed at once (one statement), and settled at once when they have all run.
const CLAIM_BATCH: u32 = 256;
/// Requests whose timer jobs run at once: their appends share commits (group commit).
const TIMER_CONCURRENCY: usize = 64;
const PENDING_REPORT_EVERY: Duration = Duration::from_secs(5);

/// The cleaners that the routing rules select for `request`, in configuration order.
pub fn plan_cleaners(config: &Config, request: &Request) -> Vec<PlannedCleaner> {
    config
        .cleaners
        .iter()
        .filter(|c| {
            c.routing.matches(
                &request.jurisdiction,
                request.source.as_deref(),
                &request.tags,
            )
        })
        .map(|c| PlannedCleaner {
            name: c.name.clone(),
            max_attempts: c.retry.max_attempts,
        })
        .collect()
}

/// Per-process limits of each cleaner: calls in flight and calls per second.
#[derive(Debug, Default)]
struct CleanerLimits {
    in_flight: HashMap<CleanerName, Arc<Semaphore>>,
    rate: HashMap<CleanerName, DefaultDirectRateLimiter>,
}

impl CleanerLimits {
    fn new(config: &Config) -> Self {
        let mut limits = Self::default();
        for cleaner in &config.cleaners {
            if let Some(max) = cleaner.max_in_flight {
                let permits = usize::try_from(max).unwrap_or(usize::MAX);
                limits
                    .in_flight
                    .insert(cleaner.name.clone(), Arc::new(Semaphore::new(permits)));
            }
            if let Some(rate) = cleaner.rate_per_second {
                let period = Duration::from_secs_f64(1.0 / rate);
                if let Some(quota) = Quota::with_period(period) {
                    let burst =
                        NonZeroU32::new(rate.ceil().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
                    limits.rate.insert(
                        cleaner.name.clone(),
                        RateLimiter::direct(quota.allow_burst(burst)),
                    );
                }
            }
        }
        limits
    }
}

#[derive(Debug)]
pub struct Workers {
    pub requests: Requests,
    pub workflow: Arc<dyn WorkflowStore>,
    pub config: Arc<Config>,
    pub key: MasterKey,
    pub client: reqwest::Client,
    /// This process's identity as a lease owner.
    pub owner: String,
    /// Where cleaners reach this engine, for `callback_url`.
    pub public_url: String,
    limits: CleanerLimits,
    last_pending_report: std::sync::Mutex<Option<std::time::Instant>>,
    /// For re-publishing Due to Kafka cleaners on a retry.
    producer: Option<crate::kafka::RenewingProducer>,
}

enum Outcome {
    /// The job is done: remove it.
    Finish,
    /// Run it again at this time, with this attempt.
    Reschedule(DateTime<Utc>, u32),
}

impl Workers {
    pub fn new(
        requests: Requests,
        workflow: Arc<dyn WorkflowStore>,
        config: Arc<Config>,
        key: MasterKey,
        owner: String,
        public_url: String,
    ) -> Self {
        let limits = CleanerLimits::new(&config);
        let producer = config.kafka.as_ref().and_then(|k| {
            crate::kafka::producer(&k.brokers)
                .map_err(|error| {
                    tracing::error!(error = %error, "cannot create the Kafka producer; Kafka cleaners' retries wait for it");
                })
                .ok()
        });
        Self {
            requests,
            workflow,
            config,
            key,
            client: crate::cleaners::http::client(),
            owner,
            public_url,
            limits,
            last_pending_report: std::sync::Mutex::new(None),
            producer,
        }
    }

    fn lease(&self) -> Duration {
        self.config.engine.lease.0
    }

    /// A dispatch lease outlives the slowest cleaner call, so a live call is never re-claimed.
    fn dispatch_lease(&self) -> Duration {
        let slowest = self
            .config
            .cleaners
            .iter()
            .map(|c| c.timeout.0)
            .max()
            .unwrap_or_default();
        self.lease().max(slowest + Duration::from_secs(5))
    }

    fn poll_interval(&self) -> Duration {
        self.config.engine.poll_interval.0
    }

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
        let (jobs, outcomes): (Vec<Vec<Job>>, Vec<Vec<_>>) = done.into_iter().unzip();
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

    async fn settle(&self, job: &Job, outcome: Result<Outcome, RequestError>) {
        let result = match outcome {
            Ok(Outcome::Finish) => self.workflow.finish_job(job, &self.owner).await,
            Ok(Outcome::Reschedule(at, attempt)) => {
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
    async fn settle_all(&self, jobs: &[Job], outcomes: Vec<Result<Outcome, RequestError>>) {
        let mut finished = Vec::new();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            match outcome {
                Ok(Outcome::Finish) => finished.push(job.clone()),
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
    async fn decide(
        &self,
        id: RequestId,
        actor: &str,
        make: impl Fn(&Request) -> Command + Send + Sync,
    ) -> Result<Outcome, RequestError> {
        match self
            .requests
            .execute(id, &EventMetadata::new(actor), make)
            .await
        {
            Ok(_) | Err(RequestError::Rejected(_) | RequestError::NotFound(_)) => {
                Ok(Outcome::Finish)
            }
            Err(error) => Err(error),
        }
    }

    /// Records a command on the request as just read (read again only if it changed since);
    /// a domain rejection means there is nothing (more) to do.
    async fn record(
        &self,
        loaded: LoadedRequest,
        actor: &str,
        command: Command,
    ) -> Result<Outcome, RequestError> {
        let id = loaded.request.id;
        let metadata = EventMetadata::new(actor);
        match self
            .requests
            .execute_all(id, &metadata, Some(loaded), &[command])
            .await
        {
            Ok(_) | Err(RequestError::NotFound(_)) => Ok(Outcome::Finish),
            Err(error) => Err(error),
        }
    }

    /// Runs one timer job at `now`; `preloaded` is its request as read with the rest of the
    /// round.
    async fn run_timer(
        &self,
        job: &Job,
        now: DateTime<Utc>,
        preloaded: Option<LoadedRequest>,
    ) -> Result<Outcome, RequestError> {
        let command = match job.kind {
            JobKind::Remind | JobKind::Notify => {
                return self.run_reminder(job, now, preloaded).await;
            }
            JobKind::Callback => {
                let Ok(cleaner) = CleanerName::parse(job.key.clone()) else {
                    return Ok(Outcome::Finish);
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
            JobKind::Shred => {
                return match self
                    .requests
                    .shred(job.request_id, &EventMetadata::new("system:timers"))
                    .await
                {
                    Ok(_) | Err(RequestError::Rejected(_) | RequestError::NotFound(_)) => {
                        Ok(Outcome::Finish)
                    }
                    Err(error) => Err(error),
                };
            }
            JobKind::Dispatch => return Ok(Outcome::Finish),
        };
        match preloaded {
            Some(loaded) => self.record(loaded, "system:timers", command).await,
            None => {
                self.decide(job.request_id, "system:timers", |_| command.clone())
                    .await
            }
        }
    }

    /// The request as read with its round, or read now.
    async fn loaded(
        &self,
        id: RequestId,
        preloaded: Option<LoadedRequest>,
    ) -> Result<Option<LoadedRequest>, RequestError> {
        match preloaded {
            Some(loaded) => Ok(Some(loaded)),
            None => self.requests.load(id).await,
        }
    }

    /// The end of the grace period, or a re-plan after a hold release or an admin retry.
    async fn run_due(
        &self,
        job: &Job,
        now: DateTime<Utc>,
        preloaded: Option<LoadedRequest>,
    ) -> Result<Outcome, RequestError> {
        let Some(loaded) = self.loaded(job.request_id, preloaded).await? else {
            return Ok(Outcome::Finish);
        };
        let request = &loaded.request;
        match &request.phase {
            Phase::Grace if request.hold.is_some() => Ok(Outcome::Finish),
            Phase::Grace if now < request.due_at => {
                Ok(Outcome::Reschedule(request.due_at, job.attempt))
            }
            Phase::Grace => {
                let command = Command::MarkDue {
                    at: now,
                    cleaners: plan_cleaners(&self.config, request),
                    expedite: false,
                };
                self.record(loaded, "system:timers", command).await
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
                Ok(Outcome::Finish)
            }
            _ => Ok(Outcome::Finish),
        }
    }

    /// Delivers reminder `job.key` (ADR 16). The job's attempt counts the notifier calls made
    /// for it so far, none accepted. It ends by recording an outcome: `ReminderSent` once the
    /// notifier accepted (never before: a crash before the append leaves the job to call
    /// again, with the same `Idempotency-Key`), or `ReminderNotSent` with the reason once the
    /// reminder can no longer be useful. A failed call is tried again with backoff while a
    /// try still fits before the grace period ends.
    async fn run_reminder(
        &self,
        job: &Job,
        now: DateTime<Utc>,
        preloaded: Option<LoadedRequest>,
    ) -> Result<Outcome, RequestError> {
        let Ok(index) = job.key.parse::<u32>() else {
            return Ok(Outcome::Finish);
        };
        let Some(loaded) = self.loaded(job.request_id, preloaded).await? else {
            return Ok(Outcome::Finish);
        };
        let request = &loaded.request;
        let Some(reminder) = request.reminders.get(index as usize) else {
            return Ok(Outcome::Finish);
        };
        if reminder.is_resolved() {
            return Ok(Outcome::Finish);
        }
        let moot = request.reminder_moot(now);
        if moot.is_some() && matches!(reminder.outcome, ReminderOutcome::Reminded { .. }) {
            // A `Reminded` of an older version: it may have been delivered, which its log
            // does not say; claiming "not sent" could be false, so it stays `reminded`.
            return Ok(Outcome::Finish);
        }
        let calls = job.attempt;
        let not_sent = |reason, calls, last_error| Command::RecordReminderNotSent {
            index,
            at: now,
            reason,
            calls,
            last_error,
        };
        if let Some(reason) = moot {
            let command = not_sent(reason, calls, None);
            return self.record(loaded, REMINDER_ACTOR, command).await;
        }
        let Some(notifier) = &self.config.notifier else {
            let command = not_sent(ReminderNotSentReason::NoNotifier, calls, None);
            return self.record(loaded, REMINDER_ACTOR, command).await;
        };
        let SubjectAccess::Clear(subject) = self.requests.subject_of(request).await? else {
            let command = not_sent(ReminderNotSentReason::SubjectUnreadable, calls, None);
            return self.record(loaded, REMINDER_ACTOR, command).await;
        };
        let token = self.key.cancel_token(request.id);
        let body = serde_json::json!({
            "request_id": request.id,
            "reminder": index,
            "subject": subject,
            "due_at": request.due_at,
            "deadline": request.deadline,
            "cancel_token": token,
            "cancel_url": format!("{}/v1/requests/{}/cancel?token={token}", self.public_url, request.id),
        });
        let started = std::time::Instant::now();
        let answer = notify(
            &self.client,
            &notifier.url,
            notifier.secret.as_deref(),
            &body,
            &reminder_idempotency_key(request.id, index),
            notifier.timeout.0,
            now,
        )
        .await;
        let at = now + micros(started.elapsed());
        let calls = calls.saturating_add(1);
        let error = match answer {
            Ok(()) => {
                let command = Command::RecordReminderSent { index, at, calls };
                return self.record(loaded, REMINDER_ACTOR, command).await;
            }
            Err(error) => error,
        };
        let jitter: f64 = rand::random();
        let next = at + micros(NOTIFY_RETRY.delay_after(calls, jitter, None));
        if next >= request.due_at {
            tracing::warn!(request.id = %request.id, reminder = index, calls, error = %error, "the notifier did not accept the reminder, and no try fits before the grace period ends");
            let command = not_sent(ReminderNotSentReason::NotifierFailed, calls, Some(error));
            return self.record(loaded, REMINDER_ACTOR, command).await;
        }
        tracing::warn!(request.id = %request.id, reminder = index, calls, error = %error, retry_at = %next, "the notifier failed; retrying");
        Ok(Outcome::Reschedule(next, calls))
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

    /// The claimed requests, and the subjects of those with a cleaner to call over HTTP.
    async fn load_claim(
        &self,
        ids: &[RequestId],
        groups: &[(Vec<Job>, OwnedSemaphorePermit)],
    ) -> Result<
        (
            HashMap<RequestId, LoadedRequest>,
            HashMap<RequestId, SubjectAccess>,
        ),
        RequestError,
    > {
        let loaded = self.requests.load_many(ids).await?;
        let wanted: Vec<&Request> = groups
            .iter()
            .filter(|(group, _)| {
                group.iter().any(|job| {
                    if job.dispatches_all() {
                        return self.config.cleaners.iter().any(|c| c.kind.is_http());
                    }
                    CleanerName::parse(job.key.clone())
                        .ok()
                        .and_then(|name| self.config.cleaner(&name))
                        .is_some_and(|c| c.kind.is_http())
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
            return jobs.iter().map(|_| Ok(Outcome::Finish)).collect();
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
        let mut outcomes: Outcomes = jobs.iter().map(|_| Ok(Outcome::Finish)).collect();
        let mut own_jobs = Vec::new();
        for (call, step) in calls.into_iter().zip(steps) {
            let outcome = match step {
                Step::Settled(outcome) => outcome,
                Step::Record(_) => match &recorded {
                    Ok(()) => Ok(Outcome::Finish),
                    Err(error) => Err(StoreError::Downstream(error.clone()).into()),
                },
            };
            if !jobs[call.job].dispatches_all() {
                outcomes[call.job] = outcome;
                continue;
            }
            let run_at = match outcome {
                Ok(Outcome::Finish) => continue,
                Ok(Outcome::Reschedule(at, _)) => at,
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
        let Phase::Cleaning(cleaning) = &request.phase else {
            return Step::Settled(Ok(Outcome::Finish));
        };
        let Some(progress) = cleaning.cleaners.get(&cleaner) else {
            return Step::Settled(Ok(Outcome::Finish));
        };
        if progress.state != CleanerState::Pending || progress.next_attempt() != attempt {
            return Step::Settled(Ok(Outcome::Finish));
        }
        if request.hold.is_some() {
            // Releasing the hold re-plans the cleaners still pending.
            return Step::Settled(Ok(Outcome::Finish));
        }
        let failure = |error: String| {
            Step::Record(Command::RecordCleanerFailure {
                cleaner: cleaner.clone(),
                attempt,
                at: now,
                error,
                status_code: None,
                retryable: false,
                retry_after_seconds: None,
            })
        };
        let Some(config) = self.config.cleaner(&cleaner) else {
            return failure(format!("cleaner {cleaner} is no longer configured"));
        };
        if let Some(window) = &config.window {
            if !window.contains(now) {
                return Step::Settled(Ok(Outcome::Reschedule(window.next_open(now), attempt)));
            }
        }
        let _in_flight = match self.limits.in_flight.get(&cleaner) {
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Step::Settled(Ok(Outcome::Reschedule(
                        now + micros(self.poll_interval()),
                        attempt,
                    )))
                }
            },
            None => None,
        };
        if let Some(limiter) = self.limits.rate.get(&cleaner) {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                return Step::Settled(Ok(Outcome::Reschedule(now + micros(wait), attempt)));
            }
        }
        match &config.kind {
            // A person confirms through the result endpoint or the CLI.
            CleanerKind::Manual(_) => Step::Settled(Ok(Outcome::Finish)),
            CleanerKind::Kafka(_) => {
                Step::Settled(self.dispatch_kafka(loaded, &cleaner, attempt, config).await)
            }
            CleanerKind::Http(HttpCleanerConfig { url, secret }) => {
                let subject = match subject {
                    Some(SubjectAccess::Clear(subject)) => subject.clone(),
                    _ => return failure("the subject's identifiers cannot be read".to_owned()),
                };
                let call = CleanerCall {
                    request_id: request.id,
                    cleaner: cleaner.clone(),
                    attempt,
                    subject,
                    due_at: request.due_at,
                    deadline: request.deadline,
                    callback_url: format!(
                        "{}/v1/requests/{}/cleaners/{cleaner}/result",
                        self.public_url, request.id
                    ),
                };
                let http = HttpCleaner::new(
                    self.client.clone(),
                    url.clone(),
                    secret.clone(),
                    config.timeout.0,
                );
                let started = std::time::Instant::now();
                let outcome = http.call(&call, now).await;
                let at = Utc::now();
                // The result is counted when it is recorded (`metrics::cleaner_results`).
                crate::telemetry::metrics::cleaner_call(
                    cleaner.as_str(),
                    "http",
                    started.elapsed().as_secs_f64(),
                );
                if outcome == CallOutcome::Accepted {
                    crate::telemetry::metrics::cleaner_attempt(
                        cleaner.as_str(),
                        "http",
                        "accepted",
                    );
                }
                match outcome {
                    CallOutcome::Done { deleted, detail } => {
                        Step::Record(Command::RecordCleanerSuccess {
                            cleaner,
                            attempt,
                            at,
                            deleted,
                            detail,
                        })
                    }
                    CallOutcome::Accepted => {
                        let callback = self
                            .workflow
                            .apply(&[JobChange::Upsert(Job {
                                request_id: request.id,
                                kind: JobKind::Callback,
                                key: cleaner.to_string(),
                                run_at: at + micros(config.callback_timeout.0),
                                attempt,
                            })])
                            .await;
                        Step::Settled(
                            callback
                                .map(|()| Outcome::Finish)
                                .map_err(RequestError::from),
                        )
                    }
                    CallOutcome::Failed {
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
                }
            }
        }
    }

    /// A Kafka cleaner's attempt: attempt 1 is the Due event the relay publishes, and the
    /// relay starts its `callback_timeout` once the broker has acknowledged it (ADR 19), so
    /// there is nothing to do here; a retry publishes the Due message again for this cleaner,
    /// with its attempt number, and its `callback_timeout` starts at the broker's ack. Either
    /// way the result comes on the results topic, or the attempt fails after
    /// `callback_timeout`.
    async fn dispatch_kafka(
        &self,
        loaded: &LoadedRequest,
        cleaner: &CleanerName,
        attempt: u32,
        config: &crate::config::CleanerConfig,
    ) -> Result<Outcome, RequestError> {
        if attempt == 1 {
            return Ok(Outcome::Finish);
        }
        {
            let topic = self
                .config
                .kafka
                .as_ref()
                .and_then(|k| k.publish.get("Due"));
            let (Some(topic), Some(producer)) = (topic, &self.producer) else {
                // The config check requires a published Due, so only a producer that could not
                // be created gets here: the retry must not vanish, its job runs again after its
                // lease.
                return Err(StoreError::Downstream(
                    "kafka: no producer to publish the retry with".to_owned(),
                )
                .into());
            };
            let due = loaded
                .events
                .iter()
                .rev()
                .find(|e| e.event_type == "Due")
                .ok_or_else(|| StoreError::Corrupt("a cleaning request without Due".to_owned()))?;
            let started = std::time::Instant::now();
            let sent =
                crate::kafka::publish_retry(&producer.current(), topic, due, cleaner, attempt)
                    .await;
            if let Err(error) = sent {
                // A producer broken by an outage stays broken: the next try gets a new one
                // (see `RenewingProducer`). The job runs again after its lease.
                producer.renew();
                return Err(StoreError::Downstream(error).into());
            }
            crate::telemetry::metrics::cleaner_call(
                cleaner.as_str(),
                "kafka",
                started.elapsed().as_secs_f64(),
            );
        }
        self.workflow
            .apply(&[JobChange::Upsert(Job {
                request_id: loaded.request.id,
                kind: JobKind::Callback,
                key: cleaner.to_string(),
                // From the broker's ack of the retry (the publish above waited for it).
                run_at: Utc::now() + micros(config.callback_timeout.0),
                attempt,
            })])
            .await?;
        Ok(Outcome::Finish)
    }
}

/// Each job's outcome, in the order of its jobs.
type Outcomes = Vec<Result<Outcome, RequestError>>;

/// What a dispatch job came to before the group's results are recorded.
enum Step {
    /// Settled without a new event.
    Settled(Result<Outcome, RequestError>),
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

/// The `Idempotency-Key` of every notifier call for one reminder.
pub fn reminder_idempotency_key(request: RequestId, index: u32) -> String {
    format!("{request}:reminder:{index}")
}

/// Jobs grouped by request, in order of each request's first job, each group in claim order.
fn by_request(jobs: Vec<Job>) -> Vec<Vec<Job>> {
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
