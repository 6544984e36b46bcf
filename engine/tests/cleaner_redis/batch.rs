//! A Redis cleaner with `batch` in a running engine: a thousand requests due together go in a
//! handful of calls (counted by `lethe_cleaner_batch_size`), each completed with its own counts,
//! every subject's keys gone and the neighbours' kept.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::keyspace::Keyspace;
use crate::many::{
    assert_each_erased_once, assert_few_calls, many_config, submit_all, user, wait_completed,
};
use crate::redis_url;
use crate::support::config::Cleaner;
use crate::support::engine::TestEngine;

const SUBJECTS: usize = 1_000;
const NEIGHBOURS: usize = 100;
/// The cleaner's name: this test's own series in the process's metrics.
const NAME: &str = "cache-batch";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_due_requests_in_batches_each_erase_their_own_subject() {
    let Some(url) = redis_url() else { return };
    let mut space = Keyspace::open(&url).await;
    // u0..u999 are erased; u1000..u1099 are their neighbours (u1 is a prefix of u10, u100, u1000).
    let ids: Vec<String> = (0..SUBJECTS + NEIGHBOURS)
        .map(|i| format!("u{i}"))
        .collect();
    let keys: Vec<String> = ids
        .iter()
        .flat_map(|id| [format!("user:{id}"), format!("session:{id}:a")])
        .collect();
    space.set_many(&keys).await;
    let cleaner = Cleaner::raw(
        NAME,
        "redis",
        &format!("url = \"{url}\"\n{}", space.settings()),
    )
    .batch(500, "1s")
    .retry(8, "200ms", "1s", 2.0);
    let config = many_config(cleaner);
    let store = crate::support::postgres().await;
    let engine = TestEngine::spawn(&store, config).await;

    let subjects = ids[..SUBJECTS].iter().map(|id| user(id)).collect();
    let requests = submit_all(&engine.requests, subjects).await;
    let completed = wait_completed(&engine.requests, &requests, Duration::from_secs(180)).await;
    assert_each_erased_once(&completed, "keys", &json!(2));
    assert_few_calls(NAME, SUBJECTS);
    let left = space.keys().await;
    let expected: BTreeSet<String> = ids[SUBJECTS..]
        .iter()
        .flat_map(|id| [format!("user:{id}"), format!("session:{id}:a")])
        .collect();
    assert_eq!(left, expected, "only the neighbours' keys are left");

    engine.stop().await;
    space.clean_up().await;
}
