//! `after`: under concurrency, with cleaners answering at random small delays and failing
//! now and then, no request's dependent cleaner is called before what it waits for succeeded;
//! the same when both cleaners send batches.

use std::collections::HashMap;
use std::time::Duration;

use lethe_domain::event::Event;
use lethe_domain::RequestId;
use lethe_engine::app::LoadedRequest;

use super::flow_service::{Answer, FlowService, Item};
use super::many::{submit_all, user, wait_completed};
use super::support::engine::TestEngine;
use super::support::{self, TestStore};
use super::{cleaner, config};

const DELAY: Duration = Duration::from_millis(60);

/// `primary`: fails a third of the first attempts, after up to [`DELAY`].
async fn flaky_primary() -> FlowService {
    FlowService::start(DELAY, |body| {
        if body["attempt"] == 1 && rand::random::<f64>() < 0.33 {
            Answer::Fail
        } else {
            Answer::Succeed
        }
    })
    .await
}

/// `replica` was sent each request once, and only after `primary` succeeded for it; some
/// `primary` attempts failed first. Returns the calls by request id.
fn replica_came_after_primary(
    replica: &FlowService,
    ids: &[RequestId],
    loaded: &[LoadedRequest],
) -> HashMap<String, Item> {
    let calls: HashMap<String, Item> = replica
        .items()
        .into_iter()
        .map(|item| (item.body["request_id"].as_str().unwrap().to_owned(), item))
        .collect();
    assert_eq!(calls.len(), ids.len(), "replica sent each request once");
    let mut retried = 0;
    for (id, request) in ids.iter().zip(loaded) {
        let done = request
            .events
            .iter()
            .find(|e| {
                matches!(e.event().unwrap(), Event::CleanerSucceeded(s) if s.cleaner.as_str() == "primary")
            })
            .expect("primary succeeded")
            .recorded_at;
        retried += usize::from(
            request
                .events
                .iter()
                .any(|e| e.event_type == "CleanerFailed"),
        );
        let call = &calls[&id.to_string()];
        assert!(
            call.at >= done,
            "{id}: replica called at {} before primary succeeded at {done}",
            call.at
        );
    }
    assert!(retried > 0, "some primary attempts failed first");
    calls
}

/// `replica` comes after `primary` and after `archive`, which these requests are not routed
/// to; `search` waits for nothing.
async fn a_cleaner_is_called_only_after_the_ones_it_names(store: TestStore) {
    let primary = flaky_primary().await;
    let replica = FlowService::start(DELAY, |_| Answer::Succeed).await;
    let search = FlowService::start(DELAY, |_| Answer::Succeed).await;
    let archive = FlowService::ok().await;
    let config = config()
        .cleaner(cleaner("primary", &primary.url))
        .cleaner(cleaner("replica", &replica.url).after(&["primary", "archive"]))
        .cleaner(cleaner("search", &search.url))
        .cleaner(cleaner("archive", &archive.url).jurisdictions(&["ccpa"]));
    let engine = TestEngine::spawn(&store, config).await;
    let ids = submit_all(
        &engine.requests,
        (0..80).map(|i| user(&i.to_string())).collect(),
    )
    .await;
    let loaded = wait_completed(&engine.requests, &ids, Duration::from_secs(60)).await;

    replica_came_after_primary(&replica, &ids, &loaded);
    assert!(
        archive.items().is_empty(),
        "archive is not routed these requests"
    );
    // search did not wait: some of its calls came before primary's success.
    let search_first = search.items().iter().any(|item| {
        let id: RequestId = item.body["request_id"].as_str().unwrap().parse().unwrap();
        let request = &loaded[ids.iter().position(|i| *i == id).unwrap()];
        request
            .events
            .iter()
            .any(|e| e.event_type == "CleanerSucceeded" && e.recorded_at > item.at)
    });
    assert!(search_first, "an unordered cleaner is called side by side");
    engine.stop().await;
}

/// Both cleaners batched: `primary`'s batches fail a third of the requests' first attempts,
/// and `replica`'s batches carry only requests whose `primary` succeeded, each once.
async fn a_batched_cleaner_waits_for_the_batched_one_it_names(store: TestStore) {
    let primary = flaky_primary().await;
    let replica = FlowService::start(DELAY, |_| Answer::Succeed).await;
    let config = config()
        .cleaner(cleaner("primary", &primary.url).batch(40, "300ms"))
        .cleaner(
            cleaner("replica", &replica.url)
                .batch(40, "300ms")
                .after(&["primary"]),
        );
    let engine = TestEngine::spawn(&store, config).await;
    let ids = submit_all(
        &engine.requests,
        (0..120).map(|i| user(&i.to_string())).collect(),
    )
    .await;
    let loaded = wait_completed(&engine.requests, &ids, Duration::from_secs(90)).await;

    let calls = replica_came_after_primary(&replica, &ids, &loaded);
    assert!(calls.values().all(|item| item.batched));
    assert!(
        replica.posts() < ids.len() / 4 && primary.posts() < primary.items().len() / 4,
        "requests went in batches: {} and {} posts",
        primary.posts(),
        replica.posts()
    );
    engine.stop().await;
}

support::backends!(
    a_cleaner_is_called_only_after_the_ones_it_names,
    a_batched_cleaner_waits_for_the_batched_one_it_names,
);
