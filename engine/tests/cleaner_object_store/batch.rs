//! An object_store cleaner with `batch` in a running engine: a thousand requests due together
//! go in a handful of calls (counted by `lethe_cleaner_batch_size`), each completed with its own
//! count; every subject's objects are gone and the neighbours' are kept.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::{Fixture, BUCKET};
use crate::many::{
    assert_each_erased_once, assert_few_calls, many_config, submit_all, user, wait_completed,
};
use crate::support::config::Cleaner;
use crate::support::engine::TestEngine;

const SUBJECTS: usize = 1_000;
const NEIGHBOURS: usize = 100;
/// The cleaner's name: this test's own series in the process's metrics.
const NAME: &str = "uploads-batch";

fn objects(id: &str) -> [String; 2] {
    [format!("avatars/{id}.png"), format!("uploads/{id}/a.png")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_due_requests_go_in_a_few_calls() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    // u0..u999 are erased; u1000..u1099 are their neighbours (u1 is a prefix of u10, u100 and
    // u1000).
    let ids: Vec<String> = (0..SUBJECTS + NEIGHBOURS)
        .map(|i| format!("u{i}"))
        .collect();
    let keys: Vec<String> = ids.iter().flat_map(|id| objects(id)).collect();
    fx.put(BUCKET, &keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let settings = r#"keys = ["avatars/{user_id}.png"]
prefixes = ["uploads/{user_id}/"]"#;
    let cleaner = Cleaner::raw(NAME, "object_store", &fx.lines(BUCKET, settings))
        .batch(500, "1s")
        .retry(8, "200ms", "1s", 2.0);
    let config = many_config(cleaner);
    let store = crate::support::sqlite().await;
    let engine = TestEngine::spawn(&store, config).await;

    let subjects = ids[..SUBJECTS].iter().map(|id| user(id)).collect();
    let requests = submit_all(&engine.requests, subjects).await;
    let completed = wait_completed(&engine.requests, &requests, Duration::from_secs(300)).await;
    assert_each_erased_once(&completed, "objects", &json!(2));
    assert_few_calls(NAME, SUBJECTS);
    let expected: BTreeSet<String> = ids[SUBJECTS..].iter().flat_map(|id| objects(id)).collect();
    assert_eq!(
        fx.keys(BUCKET).await,
        expected,
        "only the neighbours' objects are left"
    );
    engine.stop().await;
}
