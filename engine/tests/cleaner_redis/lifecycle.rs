//! A Redis cleaner in a running engine: a request goes from its grace period to Completed and
//! the subject's keys, matched keys and hash fields are gone, the neighbours' kept; the server
//! cut off while the request is due is retried until it is back.

use std::time::Duration;

use lethe_domain::{RequestId, RequestStatus};
use lethe_engine::store::RecordedEvent;
use serde_json::json;

use crate::keyspace::{seeded_without, Keyspace, EMAIL, SUBJECT};
use crate::redis_url;
use crate::support::chaos_proxy::{ChaosProxy, Mode};
use crate::support::config::{Cleaner, TestConfig};
use crate::support::engine::TestEngine;

const WITHIN: Duration = Duration::from_secs(30);

fn config(url: &str, settings: &str) -> TestConfig {
    let cleaner = Cleaner::raw("cache", "redis", &format!("url = \"{url}\"\n{settings}"))
        .timeout("1s")
        .retry(8, "200ms", "1s", 2.0);
    TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .lease("5s")
        .cleaner(cleaner)
}

/// The `deleted` counts of the request's one success.
fn deleted(events: &[RecordedEvent]) -> serde_json::Value {
    let succeeded: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| e.event_type == "CleanerSucceeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "one success");
    succeeded[0].payload["deleted"].clone()
}

async fn erase(engine: &TestEngine, subject: &[(&str, &str)], grace: bool) -> Vec<RecordedEvent> {
    let id: RequestId = if grace {
        engine.submit(subject).await
    } else {
        engine.submit_due(subject).await
    };
    engine
        .wait_for(id, RequestStatus::Completed, WITHIN)
        .await
        .events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_erases_its_subject_from_redis_after_the_grace_period() {
    let Some(url) = redis_url() else { return };
    let mut space = Keyspace::open(&url).await;
    space.seed().await;
    let store = crate::support::postgres().await;
    let engine = TestEngine::spawn(&store, config(&url, &space.settings())).await;

    let events = erase(&engine, &[("user_id", SUBJECT), ("email", EMAIL)], true).await;
    assert_eq!(deleted(&events), json!({"keys": 4, "fields": 1}));
    assert_eq!(space.dump().await, seeded_without(&[SUBJECT]));

    // The same subject again: nothing more to delete, and the request completes.
    let events = erase(&engine, &[("user_id", SUBJECT), ("email", EMAIL)], false).await;
    assert_eq!(deleted(&events), json!({"keys": 0, "fields": 0}));
    // A hostile id erases its own data alone.
    let events = erase(&engine, &[("user_id", "*")], false).await;
    assert_eq!(deleted(&events), json!({"keys": 3, "fields": 1}));
    assert_eq!(space.dump().await, seeded_without(&[SUBJECT, "*"]));

    engine.stop().await;
    space.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cut_off_while_the_request_is_due_is_retried_until_it_is_back() {
    let Some(url) = redis_url() else { return };
    let mut space = Keyspace::open(&url).await;
    space.seed().await;
    let proxy = ChaosProxy::start(space.addr()).await;
    proxy.set(Mode::Refuse).await;
    let store = crate::support::postgres().await;
    let via_proxy = space.url_via(proxy.addr());
    let engine = TestEngine::spawn(&store, config(&via_proxy, &space.settings())).await;

    let id = engine
        .submit_due(&[("user_id", SUBJECT), ("email", EMAIL)])
        .await;
    engine
        .first_retryable_failure(id, WITHIN, &[SUBJECT, EMAIL])
        .await;
    assert_eq!(
        space.dump().await,
        seeded_without(&[]),
        "nothing deleted yet"
    );

    proxy.set(Mode::Open).await;
    let events = engine
        .wait_for(id, RequestStatus::Completed, WITHIN)
        .await
        .events;
    assert_eq!(deleted(&events), json!({"keys": 4, "fields": 1}));
    assert_eq!(space.dump().await, seeded_without(&[SUBJECT]));

    engine.stop().await;
    space.clean_up().await;
}
