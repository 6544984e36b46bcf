//! `kind = "sql"` against real servers: Postgres (a fresh schema), MariaDB (a fresh database;
//! `LETHE_TEST_MARIADB_URL`, the MariaDB half skipped loudly when it is unset) and SQLite (a
//! fresh file). `cleaner` calls the cleaner itself (`attempt`, `attempt_batch`, `dry_run`);
//! `lifecycle` runs requests through an engine submitted over HTTP, `batch` a thousand
//! of them in batches.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/many.rs"]
mod many;

mod batch;
mod cleaner;
mod lifecycle;
mod target;

use std::collections::BTreeMap;

use chrono::Utc;
use lethe_domain::state::Request;
use lethe_domain::CleanerName;
use lethe_engine::cleaners::sql::SqlCleaner;
use lethe_engine::cleaners::{Attempt, Outcome};
use lethe_engine::config::CleanerKind;
use support::config::{Cleaner, TestConfig};
use support::engine::TestEngine;
use target::STATEMENTS;

/// One test function per backend: `mod postgres`, `mod mariadb`, `mod sqlite`.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::target::Target::postgres().await).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(target) = crate::target::Target::mariadb().await {
                        super::$test(target).await;
                    }
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::target::Target::sqlite().await).await;
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;

/// The `[[cleaners]]` entry of a sql cleaner on `url`, with the test's statements and `extra`
/// lines (which win over them).
pub fn sql_cleaner(url: &str, extra: &str) -> Cleaner {
    Cleaner::raw("db", "sql", &format!("url = {url:?}"))
        .extra(STATEMENTS)
        .extra(extra)
}

/// The cleaner built as `lethe serve` builds it.
pub fn build(url: &str, extra: &str) -> SqlCleaner {
    let config = TestConfig::new().cleaner(sql_cleaner(url, extra)).build();
    let cleaner = &config.cleaners[0];
    let CleanerKind::Sql(settings) = &cleaner.kind else {
        panic!("not a sql cleaner");
    };
    SqlCleaner::new(cleaner, settings).unwrap_or_else(|e| panic!("{e}"))
}

/// A request to hand the cleaner, from an engine with a manual cleaner (an attempt needs a
/// real one; the cleaner reads only the subject).
#[derive(Debug)]
pub struct Requests {
    engine: TestEngine,
    _store: support::TestStore,
    pub cleaner: CleanerName,
}

impl Requests {
    pub async fn new() -> Self {
        let store = support::sqlite().await;
        let engine =
            TestEngine::spawn(&store, TestConfig::new().cleaner(Cleaner::manual("desk"))).await;
        Self {
            engine,
            _store: store,
            cleaner: CleanerName::parse("db").unwrap(),
        }
    }

    pub async fn request(&self) -> Request {
        let id = self.engine.submit(&[("user_id", "1")]).await;
        self.engine.load(id).await.request
    }

    pub async fn stop(self) {
        self.engine.stop().await;
    }
}

pub fn subject(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn attempt<'a>(
    request: &'a Request,
    cleaner: &'a CleanerName,
    subject: &'a BTreeMap<String, String>,
) -> Attempt<'a> {
    Attempt {
        request,
        cleaner,
        attempt: 1,
        subject: Some(subject),
        due: None,
        public_url: "http://127.0.0.1:1",
        now: Utc::now(),
    }
}

/// The counts of a success; panics naming the outcome otherwise.
pub fn deleted(outcome: &Outcome) -> BTreeMap<String, u64> {
    match outcome {
        Outcome::Succeeded { deleted, .. } => deleted.clone().unwrap_or_default(),
        other => panic!("not a success: {other:?}"),
    }
}

/// The error of a failure and whether it is retryable; panics otherwise.
pub fn failure(outcome: &Outcome) -> (String, bool) {
    match outcome {
        Outcome::Failed {
            error, retryable, ..
        } => (error.clone(), *retryable),
        other => panic!("not a failure: {other:?}"),
    }
}

pub fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}
