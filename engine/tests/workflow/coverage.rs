//! `Completed` records the declared stores covered for the request (ADR 30), and a request
//! completed without declared stores is written exactly as before they existed, and verifies.

use super::*;
use serde_json::{json, Value};

/// Three manual cleaners (one routed only GDPR requests) and four declared stores, one of them
/// erased by no cleaner.
fn inventory() -> TestConfig {
    config("1s")
        .cleaner(Cleaner::manual("archive"))
        .cleaner(Cleaner::manual("eu-db").jurisdictions(&["gdpr"]))
        .cleaner(Cleaner::manual("crm"))
        .store("boxes", &["user_id"], &["archive"])
        .store("customers", &["user_id"], &["crm", "eu-db"])
        .store("eu-orders", &["user_id"], &["eu-db"])
        .store("spreadsheets", &["user_id"], &[])
}

/// Records each cleaner's outcome over HTTP: `Some(reason)` skips it, `None` succeeds.
async fn settle(engine: &Engine, id: RequestId, outcomes: &[(&str, Option<&str>)]) -> Value {
    let mut last = Value::Null;
    for (cleaner, skip) in outcomes {
        let (path, body) = match skip {
            Some(reason) => (
                format!("/v1/requests/{id}/cleaners/{cleaner}/skip"),
                json!({"reason": reason}),
            ),
            None => (
                format!("/v1/requests/{id}/cleaners/{cleaner}/result"),
                json!({"attempt": 1, "outcome": "succeeded"}),
            ),
        };
        let (status, body) = engine.post(&path, body).await;
        assert_eq!(status, 200, "{path}: {body}");
        last = body;
    }
    last
}

/// The `Completed` entry of the request's history over HTTP, which must verify.
async fn completed(engine: &Engine, id: RequestId) -> Value {
    let (status, history) = engine.get(&format!("/v1/requests/{id}/history")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["verified"], true, "{history}");
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "Completed")
        .cloned()
        .unwrap_or_else(|| panic!("no Completed in {history}"))
}

async fn completed_records_the_stores_covered(store: TestStore) {
    let engine = Engine::start(store, inventory()).await;
    let gdpr = engine.submit("31", "gdpr").await;
    let ccpa = engine.submit("32", "ccpa").await;
    for id in [gdpr, ccpa] {
        engine
            .wait_for(id, RequestStatus::Due, Duration::from_secs(10))
            .await;
    }
    let last = settle(
        &engine,
        gdpr,
        &[
            ("archive", None),
            ("crm", Some("no CRM record for this subject")),
            ("eu-db", None),
        ],
    )
    .await;
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(
        completed(&engine, gdpr).await["data"]["stores"],
        json!([
            {"store": "boxes", "succeeded": ["archive"]},
            {"store": "customers", "succeeded": ["eu-db"], "skipped": ["crm"]},
            {"store": "eu-orders", "succeeded": ["eu-db"]},
        ])
    );
    // A CCPA request is not routed to eu-db: eu-orders is not covered for it.
    settle(&engine, ccpa, &[("crm", None), ("archive", None)]).await;
    assert_eq!(
        completed(&engine, ccpa).await["data"]["stores"],
        json!([
            {"store": "boxes", "succeeded": ["archive"]},
            {"store": "customers", "succeeded": ["crm"]},
        ])
    );
    engine.stop().await;
}

async fn without_declared_stores_events_are_written_as_before_and_verify(store: TestStore) {
    let engine = Engine::start(store, config("1s").cleaner(Cleaner::manual("archive"))).await;
    let id = engine.submit("33", "gdpr").await;
    engine
        .wait_for(id, RequestStatus::Due, Duration::from_secs(10))
        .await;
    settle(&engine, id, &[("archive", None)]).await;
    let loaded = engine.load(id).await;
    let payload = |event_type: &str| {
        loaded
            .events
            .iter()
            .find(|e| e.event_type == event_type)
            .map(|e| e.payload.clone())
            .unwrap_or_else(|| panic!("no {event_type}"))
    };
    // The payloads as the version before `[[stores]]` wrote them: no `stores` anywhere.
    let due = payload("Due");
    assert_eq!(
        due["cleaners"],
        json!([{"name": "archive", "max_attempts": 8}]),
        "{due}"
    );
    let done = payload("Completed");
    assert_eq!(
        done.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["at"],
        "{done}"
    );
    assert_eq!(completed(&engine, id).await["data"], done);
    engine.stop().await;
}

support::backends!(
    completed_records_the_stores_covered,
    without_declared_stores_events_are_written_as_before_and_verify,
);
