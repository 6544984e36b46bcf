//! Talking to cleaners: one [`Cleaner`] trait, "make this attempt to erase this request and
//! say how it went", and one module per kind: `http` (the protocol docs/CLEANERS.md describes,
//! signed with `signature`), `kafka` (the Due message on a topic, results on another) and
//! `manual` (a person confirms). What of a cleaner's answer may be recorded is `redact`.
//!
//! The workflow calls cleaners through a [`Registry`] the composition root builds from the
//! configuration, so adding a kind touches nothing in the workflow.

mod dry_run;
pub mod http;
pub mod kafka;
pub mod manual;
pub mod object_store;
pub mod redact;
pub mod redis;
pub mod signature;
pub mod sql;

pub use dry_run::{DryRun, DryRunItem};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::state::Request;
use lethe_domain::{CleanerName, RequestId};

use crate::store::RecordedEvent;

/// One attempt of one cleaner for one request: what the cleaner may see of it.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    pub request: &'a Request,
    pub cleaner: &'a CleanerName,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The subject's identifiers, when they could be read. They are read only for the
    /// requests of cleaners that [need them](Cleaner::needs_subject).
    pub subject: Option<&'a BTreeMap<String, String>>,
    /// The request's Due event as recorded: what a Kafka cleaner is sent again on a retry.
    pub due: Option<&'a RecordedEvent>,
    /// Where this engine is reached, for a cleaner's `callback_url`.
    pub public_url: &'a str,
    /// When the attempt began.
    pub now: DateTime<Utc>,
}

impl fmt::Debug for Attempt<'_> {
    /// Names the request, the cleaner and the attempt; never the subject.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("request", &self.request.id)
            .field("cleaner", self.cleaner)
            .field("attempt", &self.attempt)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Attempt<'_> {
    /// `{request_id}:{cleaner}`: the same for every attempt, so that a cleaner can recognise a
    /// retry of work it already did.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.request.id, self.cleaner)
    }

    /// Where a cleaner that answers later reports the result of this attempt.
    pub fn callback_url(&self) -> String {
        format!(
            "{}/v1/requests/{}/cleaners/{}/result",
            self.public_url, self.request.id, self.cleaner
        )
    }

    /// A failure that retrying cannot mend, as of the start of the attempt.
    pub fn failed(&self, error: impl Into<String>) -> Outcome {
        Outcome::Failed {
            at: self.now,
            error: error.into(),
            status_code: None,
            retryable: false,
            retry_after: None,
        }
    }
}

/// The `Idempotency-Key` of every attempt of `cleaner` for `request`.
pub fn idempotency_key(request: RequestId, cleaner: &CleanerName) -> String {
    format!("{request}:{cleaner}")
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The cleaner erased the subject.
    Succeeded {
        at: DateTime<Utc>,
        /// Counts the cleaner reported, e.g. `{"rows": 3}`.
        deleted: Option<BTreeMap<String, u64>>,
        /// The cleaner's note, already redacted and cut to size.
        detail: Option<String>,
    },
    /// The attempt failed.
    Failed {
        at: DateTime<Utc>,
        /// What happened, without the subject.
        error: String,
        /// The HTTP status, when there was one.
        status_code: Option<u16>,
        /// Whether another attempt may succeed.
        retryable: bool,
        /// When the cleaner asked to be tried again no sooner than after this.
        retry_after: Option<Duration>,
    },
    /// The cleaner has the attempt (an HTTP 202, a retry the broker acknowledged) and reports
    /// its result later; without a result by `deadline`, the attempt fails.
    Accepted { deadline: DateTime<Utc> },
    /// Nothing to do now: the result comes through another door (a person confirms a manual
    /// cleaner; a Kafka cleaner's first attempt is the Due event the relay publishes).
    Awaiting,
}

/// An attempt that could not be made now (no Kafka producer, the broker did not take the
/// message, a request without its Due event). Nothing was handed over: the attempt is made
/// again later, the same attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CleanerError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Corrupt(String),
}

/// One configured cleaner.
#[async_trait]
pub trait Cleaner: Send + Sync + fmt::Debug {
    /// Its kind as in lethe.toml, also the `kind` label of its metrics.
    fn kind(&self) -> &'static str;

    /// Whether its attempts need the subject's identifiers (they are read, and opened, only
    /// for the requests of cleaners that send them).
    fn needs_subject(&self) -> bool {
        false
    }

    /// Makes one attempt. Any answer of the cleaner is an [`Outcome`]; an error means the
    /// attempt was not made.
    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError>;

    /// Makes the attempts of several requests in one call (`batch` in lethe.toml), and answers
    /// for each of them, in order: every request keeps its own outcome, and a batch that partly
    /// fails fails only the requests that failed. Kinds that can do better than one call per
    /// request (one signed POST, one transaction, one bulk delete) override it.
    async fn attempt_batch(&self, attempts: &[Attempt<'_>]) -> Vec<Result<Outcome, CleanerError>> {
        futures::future::join_all(attempts.iter().map(|attempt| self.attempt(*attempt))).await
    }

    /// What an attempt for `subject` (already narrowed to the cleaner's `identifiers`) would
    /// erase, changing nothing: `lethe cleaners test`.
    async fn dry_run(&self, subject: &BTreeMap<String, String>) -> Result<DryRun, CleanerError> {
        let _ = subject;
        Ok(DryRun::note(format!(
            "a cleaner of kind \"{}\" erases in its own service; a dry run can only call it",
            self.kind()
        )))
    }
}

/// A cleaner that cannot be built from its settings (a secret that cannot be read, an
/// endpoint the client refuses): `serve` stops at start, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cleaner {cleaner}: {message}")]
pub struct BuildError {
    pub cleaner: CleanerName,
    pub message: String,
}

/// The configured cleaners by name, built by the composition root.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    cleaners: HashMap<CleanerName, Arc<dyn Cleaner>>,
}

impl Registry {
    pub fn insert(&mut self, name: CleanerName, cleaner: Arc<dyn Cleaner>) {
        self.cleaners.insert(name, cleaner);
    }

    pub fn get(&self, name: &CleanerName) -> Option<&Arc<dyn Cleaner>> {
        self.cleaners.get(name)
    }

    /// Whether any cleaner needs the subject's identifiers.
    pub fn any_needs_subject(&self) -> bool {
        self.cleaners.values().any(|c| c.needs_subject())
    }

    /// Whether cleaner `name` (configured) needs the subject's identifiers.
    pub fn needs_subject(&self, name: &CleanerName) -> bool {
        self.get(name).is_some_and(|c| c.needs_subject())
    }
}

/// A result awaited from a cleaner: without one by `deadline`, `attempt` fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitedResult {
    pub request_id: RequestId,
    pub cleaner: CleanerName,
    pub attempt: u32,
    pub deadline: DateTime<Utc>,
}
