//! A sql cleaner with `batch` in a running engine, on each backend: a thousand requests due
//! together go in a handful of calls (counted by `lethe_cleaner_batch_size`), each completed
//! with its own counts; every subject's rows are gone and the neighbours' are kept.

use std::time::Duration;

use std::collections::BTreeMap;

use serde_json::json;

use crate::many::{
    assert_each_erased_once, assert_few_calls, many_config, submit_all, wait_completed,
};
use crate::support::config::Cleaner;
use crate::support::engine::TestEngine;
use crate::target::{Kind, Target};

crate::on_every_backend!(a_thousand_due_requests_go_in_a_few_calls);

const SUBJECTS: usize = 1_000;
const NEIGHBOURS: usize = 100;

async fn a_thousand_due_requests_go_in_a_few_calls(target: Target) {
    // u0..u999 are erased; u1000..u1099 are their neighbours (u1 is a prefix of u10, u100 and
    // u1000, and `LIKE` would take them all).
    let ids: Vec<String> = (0..SUBJECTS + NEIGHBOURS)
        .map(|i| format!("u{i}"))
        .collect();
    target.insert_many(&ids).await;
    // The cleaner's name: this test's own series in the process's metrics, one per backend.
    let name = match target.kind {
        Kind::Postgres => "db-batch-postgres",
        Kind::MariaDb => "db-batch-mariadb",
        Kind::Sqlite => "db-batch-sqlite",
    };
    let cleaner = Cleaner::raw(name, "sql", &format!("url = {:?}", target.url))
        .extra(crate::target::STATEMENTS)
        .timeout("60s")
        .batch(500, "1s")
        .retry(8, "200ms", "1s", 2.0);
    let config = many_config(cleaner);
    let store = crate::support::sqlite().await;
    let engine = TestEngine::spawn(&store, config).await;

    let subjects = ids[..SUBJECTS]
        .iter()
        .map(|id| {
            BTreeMap::from([
                ("user_id".to_owned(), id.clone()),
                ("email".to_owned(), format!("{id}@example.com")),
            ])
        })
        .collect();
    let requests = submit_all(&engine.requests, subjects).await;
    let completed = wait_completed(&engine.requests, &requests, Duration::from_secs(300)).await;
    assert_each_erased_once(&completed, "rows", &json!(3));
    assert_few_calls(name, SUBJECTS);
    let left: Vec<(String, i64)> = target.rows().await;
    let mut expected: Vec<(String, i64)> =
        ids[SUBJECTS..].iter().map(|id| (id.clone(), 2)).collect();
    expected.extend(crate::target::seeded_without(&[]));
    expected.sort();
    assert_eq!(left, expected, "only the neighbours' rows are left");
    engine.stop().await;
}
