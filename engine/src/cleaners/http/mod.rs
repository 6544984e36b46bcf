//! The HTTP cleaner protocol (docs/CLEANERS.md is its reference): one signed POST per attempt,
//! and the answer turned into a [`CallOutcome`] the workflow can act on (done, result later,
//! retry, give up).
//!
//! This module does the call and the classification only; it neither records events nor
//! schedules retries. Two rules shape it. The subject's identifiers are personal data, so they
//! travel in the request body and nowhere else: not in logs, not in error texts, not in
//! `Debug` output (a cleaner that echoes them in its answer has them replaced by
//! `[redacted]`). And a cleaner's answer is untrusted input: bodies are read with a size cap,
//! and only a bounded excerpt of an error body is kept. Redirects are never followed (a 3xx is
//! a configuration error to fix, and following one would send the subject to a host nobody
//! configured), which is why every client passed in must come from [`client`] or disable
//! redirects the same way.
//!
//! The same transport also carries reminder notifications ([`notify`]).

mod answer;
mod batch;
mod notify;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::{CleanerName, RequestId};
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};

use super::{signature, Attempt, Cleaner, CleanerError, Outcome};
use crate::telemetry::metrics;
pub use answer::parse_retry_after;
use answer::{classify, describe_transport_error};
pub use notify::notify;

/// The header that makes every attempt for one request and cleaner the same operation.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// At most this many bytes of a cleaner's error body are kept in [`CallOutcome::Failed`], and
/// of its `detail` in [`CallOutcome::Done`]: enough to diagnose, too little to copy a dump of
/// someone's data into the audit log.
pub const MAX_EXCERPT_BYTES: usize = 512;

/// A success body larger than this is not read; the call still counts as done.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How long [`client`] waits for a TCP (and TLS) connection, whatever the call's own timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`client`] keeps an idle connection to a cleaner for reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// `callback_timeout` unless configured.
const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(3600);

/// What Lethe calls itself in `User-Agent`.
pub const USER_AGENT: &str = concat!("lethe/", env!("CARGO_PKG_VERSION"));

/// The shared client for cleaners and the notifier: no redirects, a `lethe/<version>` user
/// agent, a 5 s connect timeout and pooled connections. Per-call timeouts are set on each
/// request.
pub fn client() -> reqwest::Client {
    let builder = || {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
    };
    builder().build().unwrap_or_else(|error| {
        // The only way the build fails is a system root store with no usable certificate;
        // plain-http cleaners still work, https ones will fail with a TLS error that says so.
        tracing::error!(
            error = %error,
            "cannot load the system's root certificates; https cleaners will fail"
        );
        builder()
            .tls_built_in_native_certs(false)
            .build()
            .expect("a client without native roots always builds")
    })
}

/// One attempt to have one cleaner erase one subject: exactly the JSON body Lethe POSTs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanerCall {
    pub request_id: RequestId,
    pub cleaner: CleanerName,
    /// 1 for the first attempt; a cleaner may use it in its own logs, never to deduplicate.
    pub attempt: u32,
    /// Identifier kind → value (`user_id`, `email`, ...); the cleaner erases what it knows.
    pub subject: BTreeMap<String, String>,
    /// When the grace period ended and erasure became due.
    pub due_at: DateTime<Utc>,
    /// The legal deadline (a date) by which the whole request must be completed.
    pub deadline: NaiveDate,
    /// Where a cleaner that answered 202 reports the result.
    pub callback_url: String,
}

impl CleanerCall {
    /// `{request_id}:{cleaner}`: the same for every attempt, so that a cleaner can recognise a
    /// retry of work it already did.
    pub fn idempotency_key(&self) -> String {
        super::idempotency_key(self.request_id, &self.cleaner)
    }
}

impl fmt::Debug for CleanerCall {
    /// Shows which identifier kinds the subject has, never their values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanerCall")
            .field("request_id", &self.request_id)
            .field("cleaner", &self.cleaner)
            .field("attempt", &self.attempt)
            .field("subject_kinds", &self.subject.keys().collect::<Vec<_>>())
            .field("due_at", &self.due_at)
            .field("deadline", &self.deadline)
            .field("callback_url", &self.callback_url)
            .finish()
    }
}

/// What one call achieved, as far as the workflow needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The cleaner erased the subject (any 2xx but 202).
    Done {
        /// Counts the cleaner reported, e.g. `{"rows": 3}`.
        deleted: Option<BTreeMap<String, u64>>,
        /// The cleaner's `detail`, or a note that its body could not be understood.
        detail: Option<String>,
    },
    /// The cleaner took the job (202) and will report through the callback URL.
    Accepted,
    /// The attempt failed.
    Failed {
        /// What happened, without the subject; at most [`MAX_EXCERPT_BYTES`] of the body.
        error: String,
        /// The HTTP status, when the cleaner answered at all.
        status_code: Option<u16>,
        /// 429, 5xx, timeouts and network errors: try again later. Other answers will not
        /// change by retrying.
        retryable: bool,
        /// The cleaner's `Retry-After`, when it sent one we understand.
        retry_after: Option<Duration>,
    },
}

/// One configured `kind = "http"` cleaner.
#[derive(Clone)]
pub struct HttpCleaner {
    /// Must not follow redirects; see [`client`].
    client: reqwest::Client,
    url: String,
    /// The HMAC key for `Lethe-Signature`.
    secret: String,
    /// For the whole call: connect, send, and read the answer.
    timeout: Duration,
    /// How long a cleaner that answered 202 has to report its result.
    callback_timeout: Duration,
}

impl fmt::Debug for HttpCleaner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCleaner")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("callback_timeout", &self.callback_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpCleaner {
    /// `client` must not follow redirects: pass [`client`]`()` or one built the same way.
    pub const fn new(
        client: reqwest::Client,
        url: String,
        secret: String,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            url,
            secret,
            timeout,
            callback_timeout: DEFAULT_CALLBACK_TIMEOUT,
        }
    }

    /// How long a cleaner that answered 202 has to report its result (default: an hour).
    #[must_use]
    pub const fn with_callback_timeout(mut self, callback_timeout: Duration) -> Self {
        self.callback_timeout = callback_timeout;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Makes one attempt. `now` stamps the signature and dates an HTTP-date `Retry-After`.
    /// Never fails: every problem becomes a [`CallOutcome::Failed`].
    pub async fn call(&self, call: &CleanerCall, now: DateTime<Utc>) -> CallOutcome {
        let body = match serde_json::to_vec(call) {
            Ok(body) => body,
            Err(error) => {
                return CallOutcome::Failed {
                    error: format!("cannot encode the call: {error}"),
                    status_code: None,
                    retryable: false,
                    retry_after: None,
                }
            }
        };
        let signature = signature::sign(self.secret.as_bytes(), now.timestamp(), &body);
        let started = Instant::now();
        let sent = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY, call.idempotency_key())
            .header(signature::HEADER, signature)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => classify(response, now, &call.subject).await,
            Err(error) => {
                let (error, retryable) = describe_transport_error(&error, self.timeout);
                CallOutcome::Failed {
                    error,
                    status_code: None,
                    retryable,
                    retry_after: None,
                }
            }
        };
        tracing::debug!(
            cleaner.name = %call.cleaner,
            request.id = %call.request_id,
            attempt = call.attempt,
            outcome = outcome_label(&outcome),
            http.status_code = status_of(&outcome),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "cleaner called"
        );
        outcome
    }
}

#[async_trait]
impl Cleaner for HttpCleaner {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn needs_subject(&self) -> bool {
        true
    }

    /// One signed POST; the call is timed (`lethe_cleaner_call_duration_seconds`), and a 202
    /// counted as accepted. The other results are counted when they are recorded.
    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        let Some(call) = call_of(&attempt) else {
            return Ok(attempt.failed("the subject's identifiers cannot be read"));
        };
        let started = Instant::now();
        let outcome = self.call(&call, attempt.now).await;
        let name = attempt.cleaner.as_str();
        metrics::cleaner_call(name, self.kind(), started.elapsed().as_secs_f64());
        Ok(self.outcome(name, outcome))
    }

    /// One signed POST for them all (docs/CLEANERS.md, "Batches"), timed as one call.
    async fn attempt_batch(&self, attempts: &[Attempt<'_>]) -> Vec<Result<Outcome, CleanerError>> {
        let calls: Vec<CleanerCall> = attempts.iter().filter_map(call_of).collect();
        let started = Instant::now();
        let mut outcomes = if calls.is_empty() {
            Vec::new()
        } else {
            let now = attempts.first().map_or_else(Utc::now, |a| a.now);
            self.call_batch(&calls, now).await
        }
        .into_iter();
        if let Some(first) = attempts.first() {
            let seconds = started.elapsed().as_secs_f64();
            metrics::cleaner_call(first.cleaner.as_str(), self.kind(), seconds);
        }
        attempts
            .iter()
            .map(|attempt| match attempt.subject {
                None => Ok(attempt.failed("the subject's identifiers cannot be read")),
                Some(_) => Ok(match outcomes.next() {
                    Some(outcome) => self.outcome(attempt.cleaner.as_str(), outcome),
                    None => attempt.failed("the batch gave no outcome for this request"),
                }),
            })
            .collect()
    }
}

/// The body of one attempt's call, if the subject's identifiers could be read.
fn call_of(attempt: &Attempt<'_>) -> Option<CleanerCall> {
    let request = attempt.request;
    Some(CleanerCall {
        request_id: request.id,
        cleaner: attempt.cleaner.clone(),
        attempt: attempt.attempt,
        subject: attempt.subject?.clone(),
        due_at: request.due_at,
        deadline: request.deadline,
        callback_url: attempt.callback_url(),
    })
}

impl HttpCleaner {
    /// A call's outcome as the workflow records it; a 202 counted as accepted.
    fn outcome(&self, name: &str, outcome: CallOutcome) -> Outcome {
        let at = Utc::now();
        match outcome {
            CallOutcome::Done { deleted, detail } => Outcome::Succeeded {
                at,
                deleted,
                detail,
            },
            CallOutcome::Accepted => {
                metrics::cleaner_attempt(name, self.kind(), "accepted");
                Outcome::Accepted {
                    deadline: at
                        + chrono::TimeDelta::from_std(self.callback_timeout)
                            .unwrap_or(chrono::TimeDelta::MAX),
                }
            }
            CallOutcome::Failed {
                error,
                status_code,
                retryable,
                retry_after,
            } => Outcome::Failed {
                at,
                error,
                status_code,
                retryable,
                retry_after,
            },
        }
    }
}

fn outcome_label(outcome: &CallOutcome) -> &'static str {
    match outcome {
        CallOutcome::Done { .. } => "done",
        CallOutcome::Accepted => "accepted",
        CallOutcome::Failed {
            retryable: true, ..
        } => "failed_retryable",
        CallOutcome::Failed { .. } => "failed",
    }
}

const fn status_of(outcome: &CallOutcome) -> Option<u16> {
    match outcome {
        CallOutcome::Failed { status_code, .. } => *status_code,
        CallOutcome::Done { .. } | CallOutcome::Accepted => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn debug_output_hides_the_subject_and_the_secret() {
        let call = CleanerCall {
            request_id: RequestId::from_uuid(uuid::Uuid::nil()),
            cleaner: CleanerName::parse("billing").unwrap(),
            attempt: 1,
            subject: BTreeMap::from([("email".into(), "ada@example.com".into())]),
            due_at: now(),
            deadline: now().date_naive(),
            callback_url: "http://lethe/cb".into(),
        };
        let shown = format!("{call:?}");
        assert!(shown.contains("email"), "{shown}");
        assert!(!shown.contains("ada@example.com"), "{shown}");
        let cleaner = HttpCleaner::new(
            client(),
            "http://x".into(),
            "topsecret".into(),
            Duration::from_secs(1),
        );
        assert!(!format!("{cleaner:?}").contains("topsecret"));
    }
}
