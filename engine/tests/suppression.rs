//! Suppression after erasure (`[suppression]`, ADR 33), on both stores: a completed request's
//! subject is kept as keyed hashes (`Suppressed`, in the commit of `Completed`), and after its
//! data key is shredded the database holds no trace of the planted identifier while
//! `POST /v1/suppressions:check` still answers with the request and its date; entries expire at
//! the recorded time (checked with times passed in, no waiting); a new request for the subject
//! is accepted and flagged (`PreviouslyErased`); an administrator lifts the suppression with a
//! reason (`SuppressionLifted` in the history) and the check answers no more.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use lethe_domain::{Event, RequestId, RequestStatus};
use lethe_engine::config::Config;
use serde_json::{json, Value};
use support::config::{Cleaner, TestConfig};
use support::engine::{eventually, TestEngine, Wiring};
use support::fake_service::FakeService;
use support::TestStore;

/// The engine's configuration: one HTTP cleaner, shredding a second after completion, and
/// `[suppression]` (when `expire_after` is given) with a key from a file in `dir`.
fn config(dir: &std::path::Path, cleaner: &str, expire_after: Option<&str>) -> Arc<Config> {
    let text = config_text(dir, cleaner, expire_after);
    Arc::new(Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// [`config`]'s text, as `lethe.toml` holds it.
fn config_text(dir: &std::path::Path, cleaner: &str, expire_after: Option<&str>) -> String {
    let mut text = TestConfig::new()
        .no_reminders()
        .retention("1s")
        .poll_interval("50ms")
        .cleaner(Cleaner::http("billing", cleaner))
        .toml();
    if let Some(expire_after) = expire_after {
        let key = dir.join("suppression.key");
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
        text.push_str(&format!(
            "\n[suppression]\nkey_file = {:?}\nexpire_after = {expire_after:?}\n",
            key.display().to_string()
        ));
    }
    text
}

async fn check(engine: &TestEngine, subject: Value) -> (u16, Value) {
    engine
        .post("/v1/suppressions:check", json!({ "subject": subject }))
        .await
}

fn types(engine_events: &[lethe_engine::store::RecordedEvent]) -> Vec<&str> {
    engine_events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect()
}

async fn a_shredded_subject_stays_suppressed_until_lifted(store: TestStore) {
    let cleaner = FakeService::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &cleaner.url, Some("30d"));
    let engine = TestEngine::spawn_with(&store, config, Wiring::Serve).await;
    let planted = format!("planted-{}", uuid::Uuid::new_v4().simple());
    let email = format!("{planted}@example.com");
    let id = engine
        .submit_due(&[("email", &email), ("user_id", &planted)])
        .await;
    let completed = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(30))
        .await;
    let kinds = types(&completed.events);
    let at = kinds.iter().position(|t| *t == "Completed").unwrap();
    assert_eq!(kinds.get(at + 1), Some(&"Suppressed"), "{kinds:?}");
    assert_eq!(
        completed.events[at].transaction_id,
        completed.events[at + 1].transaction_id,
        "Suppressed is written in the commit of Completed"
    );
    let Event::Suppressed(suppressed) = completed.events[at + 1].event().unwrap() else {
        unreachable!()
    };
    assert_eq!(suppressed.hashes.len(), 2, "one entry per identifier");
    let completed_at = suppressed.at;
    assert_eq!(
        suppressed.expires_at,
        Some(completed_at + TimeDelta::days(30))
    );

    eventually(
        Duration::from_secs(30),
        "the request is shredded",
        || async {
            types(&engine.load(id).await.events)
                .contains(&"Shredded")
                .then_some(())
        },
    )
    .await;

    // The check answers after shredding, by any one identifier, normalised as intake does.
    let answer: Value = eventually(Duration::from_secs(10), "the check answers", || async {
        let (status, answer) = check(&engine, json!({"email": email.to_uppercase()})).await;
        assert_eq!(status, 200, "{answer}");
        (answer["suppressed"] == true).then_some(answer)
    })
    .await;
    assert_eq!(answer["matches"][0]["request_id"], id.to_string());
    assert_eq!(
        answer["matches"][0]["erased_on"],
        completed_at.date_naive().to_string()
    );
    assert_eq!(answer["matches"][0]["identifiers"], json!(["email"]));
    let (_, other) = check(&engine, json!({"email": "someone@example.com"})).await;
    assert_eq!(other, json!({"suppressed": false, "matches": []}));

    // No trace of the identifier in the database; its keyed hashes are there.
    let dump = support::dump::dump(&store).await;
    assert!(dump.contains(&id.to_string()), "the right dump");
    assert!(
        dump.contains(suppressed.hashes[0].split(':').nth(1).unwrap()),
        "the entries are in the dump"
    );
    assert!(
        !dump.to_lowercase().contains(&planted.to_lowercase()),
        "the planted identifier is in the database dump"
    );

    // Expiry is evaluated at the time asked about, from the recorded `expires_at`.
    let subject = BTreeMap::from([("user_id".to_owned(), planted.clone())]);
    let before = engine
        .requests
        .check_suppressions(
            subject.clone(),
            completed_at + TimeDelta::days(30) - TimeDelta::seconds(1),
        )
        .await
        .unwrap();
    assert!(before.suppressed, "{before:?}");
    let after = engine
        .requests
        .check_suppressions(subject.clone(), completed_at + TimeDelta::days(30))
        .await
        .unwrap();
    assert!(!after.suppressed, "expired: {after:?}");

    flagged_and_lifted(&engine, id, &email, &planted).await;
    engine.stop().await;
}

/// A new request for the suppressed subject is accepted and flagged; lifting needs a reason,
/// is recorded with it, and ends the answers.
async fn flagged_and_lifted(engine: &TestEngine, id: RequestId, email: &str, planted: &str) {
    let (status, again) = engine
        .post("/v1/requests", json!({"subject": {"email": email}}))
        .await;
    assert_eq!(status, 201, "accepted as a new request: {again}");
    let again: RequestId = serde_json::from_value(again["id"].clone()).unwrap();
    let (_, shown) = engine.get(&format!("/v1/requests/{again}")).await;
    assert_eq!(
        shown["previously_erased"],
        json!([id.to_string()]),
        "{shown}"
    );

    let lift = format!("/v1/requests/{id}/suppression/lift");
    let (status, refused) = engine.post(&lift, json!({})).await;
    assert_eq!(status, 400, "a reason is required: {refused}");
    assert_eq!(refused["field"], "reason");
    let (status, lifted) = engine
        .post(
            &lift,
            json!({"reason": "the subject asked to be contacted again"}),
        )
        .await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(
        lifted["suppression"]["lifted_reason"],
        "the subject asked to be contacted again"
    );
    let (_, history) = engine.get(&format!("/v1/requests/{id}/history")).await;
    let event = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "SuppressionLifted")
        .unwrap_or_else(|| panic!("no SuppressionLifted in {history}"));
    assert_eq!(
        event["data"]["reason"],
        "the subject asked to be contacted again"
    );
    let (status, _) = engine.post(&lift, json!({"reason": "again"})).await;
    assert_eq!(status, 409, "nothing left to lift");
    eventually(
        Duration::from_secs(10),
        "the lifted entries answer no more",
        || async {
            let (_, answer) = check(engine, json!({"user_id": planted})).await;
            (answer["suppressed"] == false).then_some(())
        },
    )
    .await;
}

async fn without_suppression_nothing_is_kept(store: TestStore) {
    let cleaner = FakeService::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = TestEngine::spawn_with(
        &store,
        config(dir.path(), &cleaner.url, None),
        Wiring::Serve,
    )
    .await;
    let id = engine.submit_due(&[("user_id", "7")]).await;
    let completed = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(30))
        .await;
    assert!(!types(&completed.events).contains(&"Suppressed"));
    let (status, answer) = check(&engine, json!({"user_id": "7"})).await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("[suppression]"),
        "{answer}"
    );
    engine.stop().await;
}

#[tokio::test]
async fn the_check_needs_the_suppression_read_scope() {
    let store = support::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("suppression.key");
    std::fs::write(&key, "cd".repeat(32)).unwrap();
    let reader = "r".repeat(40);
    let checker = "c".repeat(40);
    let mut text = TestConfig::new()
        .token(
            "reader",
            &lethe_engine::config::token_hash(&reader),
            &["requests:read"],
        )
        .token(
            "checker",
            &lethe_engine::config::token_hash(&checker),
            &["suppression:read"],
        )
        .toml();
    text.push_str(&format!(
        "\n[suppression]\nkey_file = {:?}\n",
        key.display().to_string()
    ));
    let config = Arc::new(Config::parse(&text).unwrap());
    let engine = TestEngine::spawn_with(&store, config, Wiring::Serve).await;
    let body = json!({"subject": {"user_id": "1"}});
    let (status, _) = engine
        .post_as(Some(&reader), "/v1/suppressions:check", body.clone())
        .await;
    assert_eq!(status, 403);
    let (status, answer) = engine
        .post_as(Some(&checker), "/v1/suppressions:check", body)
        .await;
    assert_eq!((status, answer["suppressed"].clone()), (200, json!(false)));
    let (status, answer) = engine
        .post_as(
            Some(&checker),
            "/v1/suppressions:check",
            json!({"subject": {}}),
        )
        .await;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("subject")),
        "{answer}"
    );
    engine.stop().await;
}

/// `lethe suppressions check` exits 1 with the matches while suppressed, `lethe suppressions
/// lift` records the reason, and the check exits 0 afterwards.
async fn the_command_line_checks_and_lifts(store: TestStore) {
    let cleaner = FakeService::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = TestEngine::spawn_with(
        &store,
        config(dir.path(), &cleaner.url, Some("30d")),
        Wiring::Serve,
    )
    .await;
    let id = engine.submit_due(&[("user_id", "cli-42")]).await;
    engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(30))
        .await;
    engine.stop().await;
    std::fs::write(
        dir.path().join("lethe.toml"),
        config_text(dir.path(), &cleaner.url, Some("30d")),
    )
    .unwrap();
    let lethe = |args: &[&str]| {
        let mut command = support::binary::lethe(dir.path());
        command
            .args(args)
            .args(["--database-url", &store.database_url()]);
        command
    };
    let check = ["suppressions", "check", "--subject", "user_id=CLI-42"];
    let output = lethe(&check).output().await.unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(printed.contains(&id.to_string()), "{printed}");
    let output = lethe(&[
        "suppressions",
        "lift",
        &id.to_string(),
        "--reason",
        "asked again",
    ])
    .output()
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("(asked again)"),
        "the lift shows: {printed}"
    );
    let lifted = engine_events(&store, id).await;
    assert!(
        lifted.contains(&"SuppressionLifted".to_owned()),
        "{lifted:?}"
    );
    let output = lethe(&check).output().await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

async fn engine_events(store: &TestStore, id: RequestId) -> Vec<String> {
    store
        .store()
        .read_stream(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

support::backends!(
    a_shredded_subject_stays_suppressed_until_lifted,
    without_suppression_nothing_is_kept,
    the_command_line_checks_and_lifts,
);
