//! One request's statements and verify queries on an open transaction (or savepoint), and
//! what their result becomes: an [`Outcome`] for an attempt, items for a dry run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::connect::{count, execute, SqlError};
use super::params::NamedQuery;
use crate::cleaners::redact::MAX_DETAIL_CHARS;
use crate::cleaners::{DryRunItem, Outcome};

/// The statements and verify queries of one cleaner, converted for its backend.
#[derive(Debug)]
pub(super) struct Script {
    pub statements: Vec<NamedQuery>,
    pub verify: Vec<NamedQuery>,
}

/// What one request's statements did.
#[derive(Debug, Default)]
pub(super) struct Erased {
    /// `statements[j]` → rows affected, and `rows` in total.
    pub deleted: BTreeMap<String, u64>,
    /// `statements[1] skipped: no email`, one per statement or verify query skipped.
    pub skipped: Vec<String>,
    /// One dry-run line per statement and verify query.
    pub items: Vec<DryRunItem>,
    /// The first verify query that counted rows left, and its count.
    pub verify_failed: Option<(usize, i64)>,
}

/// Why one request's statements did not stand.
#[derive(Debug)]
pub(super) enum RunError {
    Sql(SqlError),
    /// `verify[index]` counted rows left.
    Verify {
        index: usize,
        count: i64,
    },
}

impl From<SqlError> for RunError {
    fn from(error: SqlError) -> Self {
        Self::Sql(error)
    }
}

impl Script {
    /// Runs the statements, then the verify queries, on `tx`; the caller commits or rolls back
    /// (and rolls back when [`Erased::verify_failed`]).
    pub async fn run(
        &self,
        tx: &mut Transaction<'_, Any>,
        subject: &BTreeMap<String, String>,
    ) -> Result<Erased, SqlError> {
        let mut erased = Erased::default();
        let mut rows = 0u64;
        for (j, statement) in self.statements.iter().enumerate() {
            let key = format!("statements[{j}]");
            match statement.values(subject) {
                Err(missing) => erased.skip(key, statement, missing.to_string()),
                Ok(values) => {
                    let affected = execute(tx, statement, &values).await?;
                    rows += affected;
                    erased.items.push(item(statement, affected));
                    erased.deleted.insert(key, affected);
                }
            }
        }
        erased.deleted.insert("rows".to_owned(), rows);
        for (index, query) in self.verify.iter().enumerate() {
            match query.values(subject) {
                Err(missing) => erased.skip(format!("verify[{index}]"), query, missing.to_string()),
                Ok(values) => {
                    let counted = count(tx, query, &values).await?;
                    erased
                        .items
                        .push(item(query, u64::try_from(counted).unwrap_or(0)));
                    if counted != 0 && erased.verify_failed.is_none() {
                        erased.verify_failed = Some((index, counted));
                    }
                }
            }
        }
        Ok(erased)
    }
}

impl Erased {
    /// Itself, unless a verify query counted rows left.
    pub fn verified(self) -> Result<Self, RunError> {
        match self.verify_failed {
            Some((index, count)) => Err(RunError::Verify { index, count }),
            None => Ok(self),
        }
    }

    fn skip(&mut self, key: String, query: &NamedQuery, missing: String) {
        self.skipped.push(format!("{key} skipped: {missing}"));
        self.items.push(DryRunItem {
            target: query.text().to_owned(),
            skipped: Some(missing),
            ..DryRunItem::default()
        });
    }

    /// The success of an attempt: the counts, and the skipped statements as its detail.
    pub fn succeeded(self, at: DateTime<Utc>) -> Outcome {
        let detail = (!self.skipped.is_empty()).then(|| {
            self.skipped
                .join("; ")
                .chars()
                .take(MAX_DETAIL_CHARS)
                .collect()
        });
        Outcome::Succeeded {
            at,
            deleted: Some(self.deleted),
            detail,
        }
    }
}

impl RunError {
    /// The failure of an attempt, its text redacted. A verify failure is not retryable: the
    /// same statements would leave the same rows.
    pub fn failed(&self, at: DateTime<Utc>, subject: &BTreeMap<String, String>) -> Outcome {
        let (error, retryable) = match self {
            Self::Sql(e) => (e.describe(subject), e.retryable),
            Self::Verify { index, count } => (
                format!("verify failed: verify[{index}] counted {count}; rolled back"),
                false,
            ),
        };
        Outcome::Failed {
            at,
            error,
            status_code: None,
            retryable,
            retry_after: None,
        }
    }
}

/// A retryable failure for a reason the cleaner itself gives (a time-out, a lost commit).
pub(super) fn retryable(at: DateTime<Utc>, error: String) -> Outcome {
    Outcome::Failed {
        at,
        error,
        status_code: None,
        retryable: true,
        retry_after: None,
    }
}

fn item(query: &NamedQuery, matched: u64) -> DryRunItem {
    DryRunItem {
        target: query.text().to_owned(),
        matched: Some(matched),
        ..DryRunItem::default()
    }
}
