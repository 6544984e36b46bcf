#![allow(dead_code)] // each test binary uses a different part of this module

//! Many requests at once: submitted together, waited for together.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lethe_domain::{RequestId, RequestStatus};
use lethe_engine::app::{LoadedRequest, Requests, Submission};
use serde_json::Value;

use crate::support::config::{Cleaner, TestConfig};

/// Submits one request per subject, 500 to a call; their ids in order.
pub async fn submit_all(
    requests: &Requests,
    subjects: Vec<BTreeMap<String, String>>,
) -> Vec<RequestId> {
    let mut ids = Vec::new();
    for chunk in subjects.chunks(500) {
        let submissions = chunk
            .iter()
            .map(|subject| Submission {
                subject: subject.clone(),
                jurisdiction: Some("gdpr".to_owned()),
                ..Submission::default()
            })
            .collect();
        for submitted in requests.submit_many(submissions, "test").await {
            ids.push(submitted.unwrap().loaded.request.id);
        }
    }
    ids
}

/// Waits until every request is completed (at most `within`); returns them as loaded, in order.
pub async fn wait_completed(
    requests: &Requests,
    ids: &[RequestId],
    within: Duration,
) -> Vec<LoadedRequest> {
    let deadline = Instant::now() + within;
    loop {
        let loaded = requests.load_many(ids).await.unwrap();
        let open: Vec<&LoadedRequest> = loaded
            .values()
            .filter(|l| l.request.status() != RequestStatus::Completed)
            .collect();
        if open.is_empty() && loaded.len() == ids.len() {
            return ids.iter().map(|id| loaded[id].clone()).collect();
        }
        if let Some(first) = open.first() {
            assert!(
                Instant::now() < deadline,
                "{} of {} requests not completed after {within:?}; one is {}: {:?}",
                open.len(),
                ids.len(),
                first.request.status(),
                first
                    .events
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `{"user_id": id}`.
pub fn user(id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("user_id".to_owned(), id.to_owned())])
}

/// The settings of a run of many requests through `cleaner`: due a second after submission,
/// no reminders, workers looking for work every 50 ms with a lease of a minute.
pub fn many_config(cleaner: Cleaner) -> TestConfig {
    TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .lease("60s")
        .cleaner(cleaner)
}

/// Each request succeeded once, with `deleted[count]` as given: every request kept its own
/// outcome, also in a batch.
pub fn assert_each_erased_once(completed: &[LoadedRequest], count: &str, expected: &Value) {
    for loaded in completed {
        let succeeded: Vec<_> = loaded
            .events
            .iter()
            .filter(|e| e.event_type == "CleanerSucceeded")
            .collect();
        assert_eq!(succeeded.len(), 1, "one attempt: {}", loaded.request.id);
        assert_eq!(
            &succeeded[0].payload["deleted"][count], expected,
            "each request counts its own: {}",
            succeeded[0].payload
        );
    }
}

/// `name` erased `requests` requests in batched calls of up to 500: at least two, and at most
/// one call per 50 requests. How many batch windows the requests span depends on how fast the
/// machine makes them due (a loaded CI machine made five of 1,000); without batching it would
/// be one call per request.
pub fn assert_few_calls(name: &str, requests: usize) {
    let calls = crate::support::metrics::batched_calls(name);
    let most = (requests / 50) as f64;
    assert!(
        (2.0..=most).contains(&calls),
        "{calls} calls for {requests} requests (2 to {most} expected)"
    );
}
