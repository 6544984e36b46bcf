//! `kind = "sql"`: Lethe erases the subject's rows itself, with the statements of the cleaner's
//! settings, in one transaction (docs/CLEANERS.md, ADR 28).
//!
//! `params` converts `:name` parameters to the backend's placeholders, `connect` is the pool
//! on Postgres, MySQL/MariaDB or SQLite, `run` is one request's statements and what they
//! become. A batch is one transaction with a savepoint per request.

pub mod connect;
pub mod params;
mod run;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lethe_domain::subject::is_identifier_kind;
use sqlx::Acquire as _;

use self::connect::{ConnectSettings, SqlDatabase};
use self::params::{Backend, NamedQuery};
use self::run::{retryable, Erased, RunError, Script};
use super::{Attempt, BuildError, Cleaner, CleanerError, DryRun, Outcome};
use crate::config::{CleanerConfig, SqlCleanerConfig};

#[derive(Debug)]
pub struct SqlCleaner {
    database: SqlDatabase,
    script: Script,
    /// The most one call (an attempt, a batch, a dry run) may take, connecting included.
    timeout: Duration,
}

impl SqlCleaner {
    /// Reads the password, converts the statements and prepares the pool (it connects on the
    /// first attempt). Errors name the setting (`statements[1]`), never the password.
    pub fn new(cleaner: &CleanerConfig, settings: &SqlCleanerConfig) -> Result<Self, BuildError> {
        let error = |message: String| BuildError {
            cleaner: cleaner.name.clone(),
            message,
        };
        let backend = Backend::of_url(&settings.url).ok_or_else(|| {
            error(format!(
                "url: the scheme is not one of {}",
                Backend::SCHEMES
            ))
        })?;
        let password = settings
            .password()
            .read("password")
            .map_err(|e| error(e.to_string()))?;
        let script = Script {
            statements: convert(&settings.statements, "statements", backend, cleaner)
                .map_err(error)?,
            verify: convert(&settings.verify, "verify", backend, cleaner).map_err(error)?,
        };
        let database = SqlDatabase::connect_lazy(ConnectSettings {
            url: &settings.url,
            password: password.as_deref(),
            max_connections: settings.max_connections,
            acquire_timeout: cleaner.timeout.0,
        })
        .map_err(|e| error(format!("url: {e}")))?;
        Ok(Self {
            database,
            script,
            timeout: cleaner.timeout.0,
        })
    }

    /// One request in its own transaction.
    async fn erase(&self, subject: &BTreeMap<String, String>) -> Result<Erased, RunError> {
        let mut tx = self.database.begin().await?;
        match self
            .script
            .run(&mut tx, subject)
            .await
            .map(Erased::verified)
        {
            Ok(Ok(erased)) => {
                tx.commit().await.map_err(connect::SqlError::from)?;
                Ok(erased)
            }
            Ok(Err(verify)) => {
                tx.rollback().await.map_err(connect::SqlError::from)?;
                Err(verify)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The requests of a batch in one transaction, a savepoint each; `None` for a request
    /// without identifiers. A request's failure rolls back its savepoint only; should the
    /// commit fail, every request that had succeeded fails with it.
    async fn erase_batch(
        &self,
        subjects: &[Option<&BTreeMap<String, String>>],
    ) -> Result<Vec<Option<Result<Erased, RunError>>>, connect::SqlError> {
        let mut tx = self.database.begin().await?;
        let mut results = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let Some(subject) = subject else {
                results.push(None);
                continue;
            };
            let mut savepoint = tx.begin().await?;
            let result = match self.script.run(&mut savepoint, subject).await {
                Ok(erased) => erased.verified(),
                Err(e) => Err(e.into()),
            };
            if result.is_ok() {
                savepoint.commit().await?;
            } else {
                savepoint.rollback().await?;
            }
            results.push(Some(result));
        }
        tx.commit().await?;
        Ok(results)
    }
}

/// `settings[j]` converted for `backend`, each with at least one parameter, every parameter an
/// identifier kind the cleaner receives.
fn convert(
    texts: &[String],
    setting: &str,
    backend: Backend,
    cleaner: &CleanerConfig,
) -> Result<Vec<NamedQuery>, String> {
    let mut queries = Vec::with_capacity(texts.len());
    for (j, text) in texts.iter().enumerate() {
        let key = format!("{setting}[{j}]");
        let query = NamedQuery::parse(text, backend).map_err(|e| format!("{key}: {e}"))?;
        if query.binds().is_empty() {
            return Err(format!(
                "{key}: has no :parameter outside literals and comments: it would erase every \
                 subject's rows"
            ));
        }
        for name in query.names() {
            if !is_identifier_kind(name) {
                return Err(format!("{key}: :{name} is not an identifier kind"));
            }
            if cleaner
                .identifiers
                .as_ref()
                .is_some_and(|i| !i.contains(name))
            {
                return Err(format!(
                    "{key}: :{name} is not among the cleaner's identifiers, so it would never run"
                ));
            }
        }
        queries.push(query);
    }
    Ok(queries)
}

#[async_trait]
impl Cleaner for SqlCleaner {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn needs_subject(&self) -> bool {
        true
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        let Some(subject) = attempt.subject else {
            return Ok(attempt.failed("the subject's identifiers could not be read"));
        };
        Ok(
            match tokio::time::timeout(self.timeout, self.erase(subject)).await {
                Err(_) => retryable(attempt.now, timed_out(self.timeout)),
                Ok(Ok(erased)) => erased.succeeded(Utc::now()),
                Ok(Err(e)) => e.failed(Utc::now(), subject),
            },
        )
    }

    async fn attempt_batch(&self, attempts: &[Attempt<'_>]) -> Vec<Result<Outcome, CleanerError>> {
        let subjects: Vec<_> = attempts.iter().map(|a| a.subject).collect();
        let result = tokio::time::timeout(self.timeout, self.erase_batch(&subjects)).await;
        let now = Utc::now();
        let all_failed = |error: &dyn Fn(&BTreeMap<String, String>) -> String| {
            attempts
                .iter()
                .map(|a| Ok(retryable(now, error(a.subject.unwrap_or(&BTreeMap::new())))))
                .collect()
        };
        match result {
            Err(_) => all_failed(&|_| timed_out(self.timeout)),
            Ok(Err(e)) => all_failed(&|subject| e.describe(subject)),
            Ok(Ok(results)) => attempts
                .iter()
                .zip(results)
                .map(|(attempt, result)| {
                    Ok(match (result, attempt.subject) {
                        (Some(Ok(erased)), _) => erased.succeeded(now),
                        (Some(Err(e)), Some(subject)) => e.failed(now, subject),
                        _ => attempt.failed("the subject's identifiers could not be read"),
                    })
                })
                .collect(),
        }
    }

    /// The statements run inside a transaction that is rolled back: the rows they would
    /// erase, and what the verify queries count after them.
    async fn dry_run(&self, subject: &BTreeMap<String, String>) -> Result<DryRun, CleanerError> {
        let run = async {
            let mut tx = self.database.begin().await?;
            let erased = self.script.run(&mut tx, subject).await?;
            tx.rollback().await?;
            Ok::<_, connect::SqlError>(erased)
        };
        match tokio::time::timeout(self.timeout, run).await {
            Err(_) => Err(CleanerError::Unavailable(timed_out(self.timeout))),
            Ok(Err(e)) => Err(CleanerError::Unavailable(e.describe(subject))),
            Ok(Ok(erased)) => Ok(DryRun {
                items: erased.items,
                note: Some(
                    "counted inside a transaction that was rolled back: nothing was erased"
                        .to_owned(),
                ),
            }),
        }
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", humantime::format_duration(timeout))
}
