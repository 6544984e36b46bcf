//! An object_store cleaner in a running engine: a request goes from its grace period to
//! `Completed` and the subject's objects are gone, the neighbours' kept (`420` beside `42`);
//! the same subject again deletes nothing more; the server cut off while a request is due is
//! retried until it is back.

use std::net::SocketAddr;
use std::time::Duration;

use lethe_domain::{RequestId, RequestStatus};
use serde_json::Value;

use super::{set, Fixture, BUCKET};
use crate::support::chaos_proxy::{ChaosProxy, Mode};
use crate::support::config::{Cleaner, TestConfig};
use crate::support::engine::TestEngine;

const WITHIN: Duration = Duration::from_secs(60);

const SETTINGS: &str = r#"keys = ["avatars/{user_id}.png"]
prefixes = ["uploads/{user_id}/"]"#;

fn config(lines: &str) -> TestConfig {
    let cleaner = Cleaner::raw("uploads", "object_store", lines).retry(50, "100ms", "500ms", 1.5);
    TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .lease("30s")
        .cleaner(cleaner)
}

/// The `objects` count of the request's one success.
async fn erased(engine: &TestEngine, id: RequestId) -> Value {
    let events = engine
        .wait_for(id, RequestStatus::Completed, WITHIN)
        .await
        .events;
    let succeeded: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "CleanerSucceeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "one success");
    succeeded[0].payload["deleted"]["objects"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_erases_its_objects_after_the_grace_period_and_once_only() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    let neighbours = ["avatars/420.png", "uploads/420/a.png", "uploads/4/a.png"];
    fx.put(
        BUCKET,
        &[
            "avatars/42.png",
            "uploads/42/a.png",
            "uploads/42/deep/b.txt",
        ],
    )
    .await;
    fx.put(BUCKET, &neighbours).await;
    let store = crate::support::sqlite().await;
    let engine = TestEngine::spawn(&store, config(&fx.lines(BUCKET, SETTINGS))).await;

    let id = engine.submit(&[("user_id", "42")]).await;
    assert_eq!(erased(&engine, id).await, 3);
    assert_eq!(fx.keys(BUCKET).await, set(&neighbours));

    let again = engine.submit_due(&[("user_id", "42")]).await;
    assert_eq!(erased(&engine, again).await, 0, "nothing more to delete");
    assert_eq!(fx.keys(BUCKET).await, set(&neighbours));
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cut_off_while_the_request_is_due_is_retried_until_it_is_back() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    fx.put(
        BUCKET,
        &["uploads/user-7731/a.png", "uploads/user-77310/a.png"],
    )
    .await;
    let server: SocketAddr = fx.moto.endpoint()["http://".len()..].parse().unwrap();
    let proxy = ChaosProxy::start(server).await;
    proxy.set(Mode::Refuse).await;
    let via_proxy = format!("http://{}", proxy.addr());
    let store = crate::support::sqlite().await;
    let engine =
        TestEngine::spawn(&store, config(&fx.lines_at(&via_proxy, BUCKET, SETTINGS))).await;

    let id = engine.submit_due(&[("user_id", "user-7731")]).await;
    engine
        .first_retryable_failure(id, WITHIN, &["user-7731"])
        .await;

    assert_eq!(fx.keys(BUCKET).await.len(), 2, "nothing deleted yet");

    proxy.set(Mode::Open).await;
    assert_eq!(erased(&engine, id).await, 1);
    assert_eq!(fx.keys(BUCKET).await, set(&["uploads/user-77310/a.png"]));
    engine.stop().await;
}
