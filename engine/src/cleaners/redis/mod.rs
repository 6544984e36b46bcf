//! `kind = "redis"`: Lethe deletes the subject's keys and hash fields itself, by the keys and patterns of the cleaner's
//! settings (docs/CLEANERS.md).
//!
//! `plan` fills the templates with a subject's identifiers, `erase` runs the plans of a batch
//! in a few round trips (`scan` walks the patterns), `failure` says what an error means, and
//! `dry_run` looks without deleting. The connection is made on first use and kept: a
//! [`ConnectionManager`] reconnects by itself after a failure, so a server that went away is
//! found again on the next attempt.

mod dry_run;
mod erase;
mod failure;
mod plan;
mod scan;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{IntoConnectionInfo, RedisError};
use async_trait::async_trait;
use chrono::Utc;
use lethe_domain::CleanerName;
use tokio::sync::OnceCell;

use super::redact::{redact, MAX_DETAIL_CHARS};
use super::{Attempt, BuildError, Cleaner, CleanerError, DryRun, Outcome};
use crate::config::{CleanerConfig, RedisCleanerConfig};
use erase::{erase, Tally};
use plan::{Action, Target, Templates};

/// Keys a `SCAN` page looks at: large enough for few round trips, small enough not to hold the
/// server up.
pub const SCAN_COUNT: u32 = 500;

pub struct RedisCleaner {
    name: CleanerName,
    client: ::redis::Client,
    /// Connecting, and every answer, may take at most this long.
    timeout: Duration,
    templates: Templates,
    /// Made on the first attempt, so that building the cleaner needs no server (nor runtime).
    connection: OnceCell<ConnectionManager>,
}

impl fmt::Debug for RedisCleaner {
    /// Never the client: its connection settings hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCleaner")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("templates", &self.templates)
            .finish_non_exhaustive()
    }
}

impl RedisCleaner {
    /// Parses the settings and reads the password; connects only on first use.
    pub fn new(cleaner: &CleanerConfig, settings: &RedisCleanerConfig) -> Result<Self, BuildError> {
        let error = |message: String| BuildError {
            cleaner: cleaner.name.clone(),
            message,
        };
        let templates = Templates::parse(settings).map_err(error)?;
        let password = settings
            .password()
            .read("password")
            .map_err(|e| error(e.to_string()))?;
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|_| error("url: not a Redis URL (redis://host:port/db)".to_owned()))?;
        if let Some(password) = password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = ::redis::Client::open(info)
            .map_err(|e| error(format!("url: the Redis client refuses it ({:?})", e.kind())))?;
        Ok(Self {
            name: cleaner.name.clone(),
            client,
            timeout: cleaner.timeout.0,
            templates,
            connection: OnceCell::new(),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        self.connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    // The workflow retries attempts with its own backoff; one reconnection
                    // within an attempt is enough.
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
    }

    /// The connection, checked: a reconnection begun while the server was away fails
    /// whoever awaits it, even once the server is back, and only then starts a fresh one. A
    /// `PING` takes that failure, and a second one awaits the fresh reconnection, so that the
    /// first attempt after an outage finds the server. Any answer of the server will do (a
    /// user whose ACL forbids `PING` gets `NOPERM`, and the connection is up).
    async fn ready_connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut connection = self.connection().await?;
        let ping = || ::redis::cmd("PING");
        match ping().query_async::<::redis::Value>(&mut connection).await {
            Err(error) if failure::is_broken_connection(&error) => {}
            Err(error) if error.is_timeout() => return Err(error),
            _ => return Ok(connection),
        }
        match ping().query_async::<::redis::Value>(&mut connection).await {
            Err(error) if failure::is_broken_connection(&error) || error.is_timeout() => Err(error),
            _ => Ok(connection),
        }
    }

    /// The attempts' outcomes, in order: what [`Cleaner::attempt_batch`] answers.
    async fn erase_all(&self, attempts: &[Attempt<'_>]) -> Vec<Result<Outcome, CleanerError>> {
        let started = Instant::now();
        let plans: Vec<Option<Vec<Target>>> = attempts
            .iter()
            .map(|attempt| attempt.subject.map(|subject| self.templates.plan(subject)))
            .collect();
        let planned: Vec<Vec<Target>> = plans.iter().flatten().cloned().collect();
        let erased = match self.ready_connection().await {
            Ok(mut connection) => erase(&mut connection, &planned, SCAN_COUNT).await,
            Err(error) => Err(error),
        };
        let outcomes = match erased {
            Err(error) => {
                tracing::warn!(
                    cleaner.name = %self.name,
                    requests = attempts.len(),
                    error = %failure::describe(&error),
                    "redis cleaner could not run"
                );
                attempts
                    .iter()
                    .map(|attempt| {
                        Ok(match attempt.subject {
                            Some(subject) => failed(attempt, subject, None, &error),
                            None => without_subject(attempt),
                        })
                    })
                    .collect()
            }
            Ok(tallies) => {
                let mut tallies = tallies.into_iter();
                attempts
                    .iter()
                    .zip(&plans)
                    .map(|(attempt, plan)| {
                        let (Some(subject), Some(plan)) = (attempt.subject, plan) else {
                            return Ok(without_subject(attempt));
                        };
                        Ok(match tallies.next() {
                            Some(tally) => outcome(attempt, subject, plan, tally),
                            None => attempt.failed("internal error: no result for this request"),
                        })
                    })
                    .collect()
            }
        };
        tracing::debug!(
            cleaner.name = %self.name,
            requests = attempts.len(),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "redis cleaner ran"
        );
        outcomes
    }
}

fn without_subject(attempt: &Attempt<'_>) -> Outcome {
    attempt.failed("the subject's identifiers could not be read")
}

/// A failed attempt; `setting` names the setting whose command failed, when one did.
fn failed(
    attempt: &Attempt<'_>,
    subject: &BTreeMap<String, String>,
    setting: Option<&str>,
    error: &RedisError,
) -> Outcome {
    let described = failure::describe(error);
    let text = match setting {
        Some(setting) => format!("{setting}: {described}"),
        None => described,
    };
    Outcome::Failed {
        at: Utc::now().max(attempt.now),
        error: scrub(&text, subject),
        status_code: None,
        retryable: failure::is_retryable(error),
        retry_after: None,
    }
}

/// The outcome of one subject's erasure: its counts, and the settings skipped for it.
fn outcome(
    attempt: &Attempt<'_>,
    subject: &BTreeMap<String, String>,
    plan: &[Target],
    tally: Tally,
) -> Outcome {
    if let Some(failure) = &tally.failure {
        return failed(attempt, subject, Some(&failure.setting), &failure.error);
    }
    let skipped: Vec<String> = plan
        .iter()
        .filter_map(|target| match &target.action {
            Action::Skip(why) => Some(format!("{} ({}): {why}", target.setting, target.written)),
            _ => None,
        })
        .collect();
    let detail =
        (!skipped.is_empty()).then(|| scrub(&format!("skipped {}", skipped.join("; ")), subject));
    Outcome::Succeeded {
        at: Utc::now().max(attempt.now),
        deleted: Some(BTreeMap::from([
            ("keys".to_owned(), tally.keys),
            ("fields".to_owned(), tally.fields),
        ])),
        detail,
    }
}

/// `text` without the subject's identifiers, cut to what a result may record.
fn scrub(text: &str, subject: &BTreeMap<String, String>) -> String {
    redact(text, subject)
        .chars()
        .take(MAX_DETAIL_CHARS)
        .collect()
}

#[async_trait]
impl Cleaner for RedisCleaner {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn needs_subject(&self) -> bool {
        true
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        self.erase_all(std::slice::from_ref(&attempt))
            .await
            .pop()
            .unwrap_or_else(|| Ok(attempt.failed("internal error: no result for this request")))
    }

    async fn attempt_batch(&self, attempts: &[Attempt<'_>]) -> Vec<Result<Outcome, CleanerError>> {
        self.erase_all(attempts).await
    }

    async fn dry_run(&self, subject: &BTreeMap<String, String>) -> Result<DryRun, CleanerError> {
        let plan = self.templates.plan(subject);
        let found = match self.ready_connection().await {
            Ok(mut connection) => dry_run::look(&mut connection, &plan).await,
            Err(error) => Err(error),
        };
        found.map_err(|error| CleanerError::Unavailable(scrub(&failure::describe(&error), subject)))
    }
}
