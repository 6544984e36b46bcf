//! A result reported later — on the HTTP result endpoint, on the Kafka results topic, or by
//! hand with `lethe confirm` — has the subject's identifiers redacted before it is recorded,
//! as a synchronous HTTP answer has (engine/tests/cleaner_http.rs). The log is immutable and
//! outlives the subject's key, so an identifier copied into it could never be erased. Subjects
//! are sealed here as in `lethe serve`: the redaction has to open them.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::kafka::producer;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::RecordedEvent;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::config::{Cleaner, TestConfig};
use support::due::due_request;
use support::TestStore;
use tower::ServiceExt as _;

const EMAIL: &str = "ada.lovelace@example.com";
const USER_ID: &str = "u-1815";
const TOKEN: &str = "tok-results";

fn subject() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("email".to_owned(), EMAIL.to_owned()),
        ("user_id".to_owned(), USER_ID.to_owned()),
    ])
}

/// A detail that names the subject both ways, past the length Lethe keeps: the email is
/// across the cut, so cutting before redacting would keep a piece of it.
fn chatty_detail() -> String {
    let pad = "x".repeat(lethe_engine::kafka::MAX_DETAIL_CHARS - 20);
    format!("user {USER_ID} erased; {pad}{EMAIL} gone")
}

fn assert_scrubbed(text: &str) {
    assert!(!text.contains(USER_ID), "{text}");
    assert!(!text.contains("ada.lovelace"), "{text}");
    assert!(!text.contains("example.com"), "{text}");
    assert!(text.starts_with("user [redacted] erased; "), "{text}");
    assert!(
        text.chars().count() <= lethe_engine::kafka::MAX_DETAIL_CHARS,
        "{}",
        text.len()
    );
}

fn sealed(store: &TestStore, config: Config) -> Requests {
    let database = store.database();
    Requests::new(database.events.clone(), Arc::new(config))
        .with_sealing(MasterKey::from_bytes([5; 32]), database.keys.clone())
}

fn event<'a>(events: &'a [RecordedEvent], event_type: &str) -> &'a RecordedEvent {
    events
        .iter()
        .find(|e| e.event_type == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in {events:?}"))
}

async fn results_over_http_are_recorded_without_the_subject(store: TestStore) {
    let config = TestConfig::new()
        .cleaner(Cleaner::manual("archive"))
        .cleaner(Cleaner::manual("ledger"))
        .token(
            "cleaners",
            &lethe_engine::http::auth::token_hash(TOKEN),
            &["cleaner:archive", "cleaner:ledger"],
        )
        .build();
    let requests = sealed(&store, config);
    let id = due_request(&requests, subject()).await;
    let app = router(AppState {
        requests: requests.clone(),
        key: MasterKey::from_bytes([5; 32]),
    });
    for (cleaner, body) in [
        (
            "archive",
            serde_json::json!({"attempt": 1, "outcome": "succeeded", "detail": chatty_detail()}),
        ),
        (
            "ledger",
            serde_json::json!({"attempt": 1, "outcome": "failed", "retryable": false, "detail": chatty_detail()}),
        ),
    ] {
        let response = app
            .clone()
            .oneshot(
                axum::http::Request::post(format!("/v1/requests/{id}/cleaners/{cleaner}/result"))
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    }
    let events = requests.load(id).await.unwrap().unwrap().events;
    assert_scrubbed(
        event(&events, "CleanerSucceeded").payload["detail"]
            .as_str()
            .unwrap(),
    );
    assert_scrubbed(
        event(&events, "CleanerFailed").payload["error"]
            .as_str()
            .unwrap(),
    );
}

async fn results_on_kafka_are_recorded_without_the_subject(store: TestStore) {
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["lethe.cleaner-results", "lethe.dead-letter"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let config = TestConfig::new()
        .kafka(&brokers)
        .cleaner(Cleaner::kafka("search"))
        .cleaner(Cleaner::kafka("index"))
        .build();
    let kafka = config.kafka.clone().unwrap();
    let requests = sealed(&store, config);
    let id = due_request(&requests, subject()).await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(lethe_engine::kafka::run_results_consumer(
        kafka,
        requests.clone(),
        shutdown,
    ));
    let producer = producer::<FutureProducer>(&brokers).unwrap();
    for (cleaner, outcome) in [("search", "succeeded"), ("index", "failed")] {
        let result = serde_json::json!({
            "request_id": id, "cleaner": cleaner, "attempt": 1, "outcome": outcome,
            "retryable": false, "detail": chatty_detail(),
        })
        .to_string();
        producer
            .send(
                FutureRecord::to("lethe.cleaner-results")
                    .key(&id.to_string())
                    .payload(&result),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = requests.load(id).await.unwrap().unwrap().events;
        let recorded = ["CleanerSucceeded", "CleanerFailed"]
            .iter()
            .all(|t| events.iter().any(|e| e.event_type == *t));
        if recorded {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "results not recorded: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(true);
    consumer.await.unwrap();
    assert_scrubbed(
        event(&events, "CleanerSucceeded").payload["detail"]
            .as_str()
            .unwrap(),
    );
    assert_scrubbed(
        event(&events, "CleanerFailed").payload["error"]
            .as_str()
            .unwrap(),
    );
}

/// `lethe ARGS` in `dir` with a clean environment, which must succeed; its stdout.
async fn lethe(dir: &Path, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lethe"));
    command.current_dir(dir).args(args).kill_on_drop(true);
    for name in [
        "LETHE_DATABASE_URL",
        "LETHE_CONFIG",
        "LETHE_LISTEN",
        "LETHE_MASTER_KEY_FILE",
        "LETHE_KAFKA_BROKERS",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("lethe finishes within a minute")
        .unwrap();
    assert!(
        output.status.success(),
        "lethe {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn results_confirmed_by_hand_are_recorded_without_the_subject() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(
        dir.join("lethe.toml"),
        "[[cleaners]]\nname = \"archive\"\nkind = \"manual\"\n\
         [[cleaners]]\nname = \"ledger\"\nkind = \"manual\"\n",
    )
    .unwrap();
    let submitted = lethe(
        dir,
        &[
            "submit",
            "--subject",
            &format!("email={EMAIL}"),
            "--subject",
            &format!("user_id={USER_ID}"),
        ],
    )
    .await;
    let id = submitted.split_whitespace().next().unwrap().to_owned();
    lethe(dir, &["expedite", &id]).await;
    let detail = chatty_detail();
    lethe(dir, &["confirm", &id, "archive", "--detail", &detail]).await;
    lethe(
        dir,
        &["confirm", &id, "ledger", "--failed", "--detail", &detail],
    )
    .await;
    let history: serde_json::Value =
        serde_json::from_str(&lethe(dir, &["history", &id, "--json"]).await).unwrap();
    let data = |event_type: &str| {
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == event_type)
            .unwrap_or_else(|| panic!("no {event_type}: {history}"))["data"]
            .clone()
    };
    assert_scrubbed(data("CleanerSucceeded")["detail"].as_str().unwrap());
    assert_scrubbed(data("CleanerFailed")["error"].as_str().unwrap());
}

support::backends!(
    results_over_http_are_recorded_without_the_subject,
    results_on_kafka_are_recorded_without_the_subject,
);
