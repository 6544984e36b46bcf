//! Batched cleaners (`batch = { max, wait }`): due requests collected and sent to an HTTP
//! cleaner in one signed POST each, every request keeping its own history, a request failed
//! by the batch's answer retried alone in a later batch; in-process on both backends with a
//! real HTTP cleaner on 127.0.0.1. Every wait polls a condition with a deadline.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/many.rs"]
mod many;

#[path = "../support/flow_service.rs"]
mod flow_service;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use flow_service::{Answer, FlowService};
use lethe_domain::event::Event;
use many::{submit_all, user, wait_completed};
use serde_json::json;
use support::config::{Cleaner, TestConfig};
use support::engine::TestEngine;
use support::TestStore;

fn config() -> TestConfig {
    TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .lease("10s")
}

/// Each request's attempts of `cleaner` as recorded: (attempt, succeeded).
fn attempts(events: &[lethe_engine::store::RecordedEvent], cleaner: &str) -> Vec<(u32, bool)> {
    events
        .iter()
        .filter_map(|e| match e.event().unwrap() {
            Event::CleanerSucceeded(s) if s.cleaner.as_str() == cleaner => Some((s.attempt, true)),
            Event::CleanerFailed(f) if f.cleaner.as_str() == cleaner => Some((f.attempt, false)),
            _ => None,
        })
        .collect()
}

/// 1,000 due requests, at most 500 a call: a handful of signed POSTs, one attempt each.
async fn a_thousand_requests_go_in_a_few_calls(store: TestStore) {
    let warehouse = FlowService::ok().await;
    let config = config().cleaner(
        Cleaner::http("warehouse", &warehouse.url)
            .timeout("20s")
            .batch(500, "5s"),
    );
    let engine = TestEngine::spawn(&store, config).await;
    let ids = submit_all(
        &engine.requests,
        (0..1000).map(|i| user(&format!("u{i}"))).collect(),
    )
    .await;
    let loaded = wait_completed(&engine.requests, &ids, Duration::from_secs(180)).await;
    let posts = warehouse.posts();
    assert!((2..=4).contains(&posts), "{posts} calls for 1,000 requests");
    let items = warehouse.items();
    assert_eq!(items.len(), 1000, "each request sent once");
    assert!(items.iter().all(|i| i.batched && i.signature_ok));
    let mut keys: Vec<&str> = items
        .iter()
        .map(|i| i.body["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 1000);
    for (id, request) in ids.iter().zip(&loaded) {
        assert_eq!(attempts(&request.events, "warehouse"), [(1, true)], "{id}");
    }
    engine.stop().await;
}

/// A batch's answer fails some requests and leaves others out: only those are tried again,
/// each with its own next attempt, and they succeed in a later batch. The batch carries only
/// the cleaner's identifiers.
async fn a_batch_fails_only_the_requests_it_failed(store: TestStore) {
    let warehouse = FlowService::start(Duration::from_millis(20), |body| {
        let user = body["subject"]["user_id"].as_str().unwrap_or_default();
        match (body["attempt"].as_u64(), user.chars().last()) {
            (Some(1), Some('7')) => Answer::Fail,
            (Some(1), Some('3')) => Answer::Omit,
            _ => Answer::Succeed,
        }
    })
    .await;
    let config = config().cleaner(
        Cleaner::http("warehouse", &warehouse.url)
            .timeout("5s")
            .retry(5, "100ms", "500ms", 2.0)
            .identifiers(&["user_id"])
            .batch(100, "300ms"),
    );
    let engine = TestEngine::spawn(&store, config).await;
    let subjects = (0..40)
        .map(|i| {
            BTreeMap::from([
                ("user_id".to_owned(), format!("u{i}")),
                ("email".to_owned(), format!("u{i}@example.com")),
            ])
        })
        .collect();
    let ids = submit_all(&engine.requests, subjects).await;
    let loaded = wait_completed(&engine.requests, &ids, Duration::from_secs(60)).await;
    let mut retried = 0;
    for (i, request) in loaded.iter().enumerate() {
        let expected: &[(u32, bool)] = if i % 10 == 7 || i % 10 == 3 {
            retried += 1;
            &[(1, false), (2, true)]
        } else {
            &[(1, true)]
        };
        assert_eq!(attempts(&request.events, "warehouse"), expected, "u{i}");
    }
    assert_eq!(retried, 8);
    let items = warehouse.items();
    assert!(items.iter().all(|i| i.batched && i.signature_ok));
    assert!(
        items
            .iter()
            .all(|i| i.body["subject"] == json!({"user_id": i.body["subject"]["user_id"]})),
        "only the cleaner's identifiers are sent"
    );
    // The retries went together, not one call each.
    let mut by_attempt: HashMap<u64, usize> = HashMap::new();
    for item in &items {
        *by_attempt
            .entry(item.body["attempt"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(by_attempt[&2], 8);
    assert!(warehouse.posts() <= 8, "{} calls", warehouse.posts());
    engine.stop().await;
}

support::backends!(
    a_thousand_requests_go_in_a_few_calls,
    a_batch_fails_only_the_requests_it_failed
);
