//! A Redis cleaner with `batch` in a running engine: a thousand requests due together, each
//! completed with its own counts, every subject's keys gone and the neighbours' kept.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::keyspace::Keyspace;
use crate::many::{submit_all, user, wait_completed};
use crate::redis_url;
use crate::support::config::{Cleaner, TestConfig};
use crate::support::engine::TestEngine;

const SUBJECTS: usize = 1_000;
const NEIGHBOURS: usize = 100;

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
        "cache",
        "redis",
        &format!("url = \"{url}\"\n{}", space.settings()),
    )
    .batch(500, "1s")
    .retry(8, "200ms", "1s", 2.0);
    let config = TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .lease("5s")
        .cleaner(cleaner);
    let store = crate::support::postgres().await;
    let engine = TestEngine::spawn(&store, config).await;

    let subjects = ids[..SUBJECTS].iter().map(|id| user(id)).collect();
    let requests = submit_all(&engine.requests, subjects).await;
    let completed = wait_completed(&engine.requests, &requests, Duration::from_secs(180)).await;
    for loaded in &completed {
        let succeeded: Vec<_> = loaded
            .events
            .iter()
            .filter(|e| e.event_type == "CleanerSucceeded")
            .collect();
        assert_eq!(succeeded.len(), 1, "{}", loaded.request.id);
        assert_eq!(
            succeeded[0].payload["deleted"],
            json!({"keys": 2, "fields": 0}),
            "each request counts its own keys"
        );
    }
    let left = space.keys().await;
    let expected: BTreeSet<String> = ids[SUBJECTS..]
        .iter()
        .flat_map(|id| [format!("user:{id}"), format!("session:{id}:a")])
        .collect();
    assert_eq!(left, expected, "only the neighbours' keys are left");

    engine.stop().await;
    space.clean_up().await;
}
