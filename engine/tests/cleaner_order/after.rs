//! `after`: under concurrency, with cleaners answering at random small delays and failing
//! now and then, no request's dependent cleaner is called before what it waits for succeeded.

use std::collections::HashMap;
use std::time::Duration;

use lethe_domain::event::Event;
use lethe_domain::RequestId;

use super::flow_service::{Answer, FlowService};
use super::many::{submit_all, user, wait_completed};
use super::support::engine::TestEngine;
use super::support::{self, TestStore};
use super::{cleaner, config};

/// `primary` fails a third of its first attempts; `replica` comes after `primary` and after
/// `archive`, which these requests are not routed to; `search` waits for nothing.
async fn a_cleaner_is_called_only_after_the_ones_it_names(store: TestStore) {
    let delay = Duration::from_millis(60);
    let primary = FlowService::start(delay, |body| {
        if body["attempt"] == 1 && rand::random::<f64>() < 0.33 {
            Answer::Fail
        } else {
            Answer::Succeed
        }
    })
    .await;
    let replica = FlowService::start(delay, |_| Answer::Succeed).await;
    let search = FlowService::start(delay, |_| Answer::Succeed).await;
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

    let replica_calls: HashMap<String, _> = replica
        .items()
        .into_iter()
        .map(|item| (item.body["request_id"].as_str().unwrap().to_owned(), item))
        .collect();
    assert_eq!(
        replica_calls.len(),
        ids.len(),
        "replica called once per request"
    );
    assert!(
        archive.items().is_empty(),
        "archive is not routed these requests"
    );
    let mut retried = 0;
    for (id, request) in ids.iter().zip(&loaded) {
        let primary_done = request
            .events
            .iter()
            .find(|e| {
                matches!(e.event().unwrap(), Event::CleanerSucceeded(s) if s.cleaner.as_str() == "primary")
            })
            .expect("primary succeeded");
        retried += usize::from(
            request
                .events
                .iter()
                .any(|e| e.event_type == "CleanerFailed"),
        );
        let call = &replica_calls[&id.to_string()];
        assert!(
            call.at >= primary_done.recorded_at,
            "{id}: replica called at {} before primary succeeded at {}",
            call.at,
            primary_done.recorded_at
        );
    }
    assert!(retried > 0, "some primary attempts failed first");
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

support::backends!(a_cleaner_is_called_only_after_the_ones_it_names);
