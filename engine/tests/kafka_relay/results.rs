//! A Kafka cleaner's results complete requests; bad results go to the dead letter topic.

use super::support::config::{Cleaner, TestConfig};
use super::support::engine::TestEngine;
use super::*;

/// A service that erases on Kafka: it reads Due messages and answers on the results topic,
/// with a detail longer than Lethe keeps.
fn start_search_service(brokers: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "search-service")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&["lethe.due"]).unwrap();
        let producer = producer::<FutureProducer>(&brokers).unwrap();
        loop {
            // The mock cluster goes away at the end of the test.
            let Ok(message) = consumer.recv().await else {
                return;
            };
            let due: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap()).unwrap();
            let planned = due["data"]["cleaners"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == "search"));
            if !planned {
                continue;
            }
            let attempt = due
                .get("attempt")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1);
            let result = serde_json::json!({
                "request_id": due["request_id"],
                "cleaner": "search",
                "attempt": attempt,
                "outcome": "succeeded",
                "deleted": {"documents": 2},
                "detail": "d".repeat(5000),
            })
            .to_string();
            let key = due["request_id"].as_str().unwrap().to_owned();
            producer
                .send(
                    rdkafka::producer::FutureRecord::to("lethe.cleaner-results")
                        .key(&key)
                        .payload(&result),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cleaners_complete_requests_and_bad_results_go_to_the_dead_letter_topic() {
    let cluster = MockCluster::new(1).unwrap();
    for topic in [
        "lethe.due",
        "lethe.completed",
        "lethe.cancelled",
        "lethe.cleaner-results",
        "lethe.dead-letter",
    ] {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let store = support::sqlite().await;
    let config = TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .kafka(&brokers)
        .cleaner(Cleaner::kafka("search").callback_timeout("60s"));
    let engine = TestEngine::spawn(&store, config).await;
    let requests = &engine.requests;
    let service = start_search_service(brokers.clone());
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(submit(requests, n).await);
    }
    wait_completed_by_search(requests, ids.clone()).await;

    let bad = send_poison(&brokers, ids[0]).await;
    let reasons = dead_letter_reasons(&brokers, bad).await;
    assert!(
        reasons.iter().any(|r| r.contains("malformed")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("unknown request")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("can no longer change")),
        "{reasons:?}"
    );
    // The consumer goes on after poison: a new request still completes.
    let later = submit(requests, 10).await;
    wait_completed_by_search(requests, vec![later]).await;
    service.abort();
    engine.stop().await;
}

/// Waits until every request completed, its success recorded from the search service's result.
async fn wait_completed_by_search(requests: &Requests, ids: Vec<RequestId>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let loaded = requests.load(id).await.unwrap().unwrap();
            if loaded.request.status() == lethe_domain::RequestStatus::Completed {
                let success = loaded
                    .events
                    .iter()
                    .find(|e| e.event_type == "CleanerSucceeded")
                    .unwrap();
                assert_eq!(success.actor, "cleaner:search");
                assert_eq!(success.payload["deleted"]["documents"], 2);
                // The service's 5,000-character detail, cut as the HTTP endpoint does.
                assert_eq!(
                    success.payload["detail"].as_str().map(str::len),
                    Some(lethe_engine::kafka::MAX_DETAIL_CHARS)
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not complete: {:?}",
                loaded.request.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Poisoned results: bad JSON, an unknown request, a result for a request already closed
/// (`closed`). Returns how many were sent.
async fn send_poison(brokers: &str, closed: RequestId) -> usize {
    let poison = producer::<FutureProducer>(brokers).unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    let stale = serde_json::json!({"request_id": closed, "cleaner": "search", "attempt": 9, "outcome": "failed"}).to_string();
    let bad = [
        "not json".to_owned(),
        serde_json::json!({"request_id": unknown, "cleaner": "search", "attempt": 1, "outcome": "succeeded"}).to_string(),
        stale,
    ];
    for payload in &bad {
        poison
            .send(
                rdkafka::producer::FutureRecord::to("lethe.cleaner-results")
                    .key("x")
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    bad.len()
}

/// The `lethe-reason` headers of the first `n` messages on the dead letter topic.
async fn dead_letter_reasons(brokers: &str, n: usize) -> Vec<String> {
    let dead: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dead-letter-reader")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    dead.subscribe(&["lethe.dead-letter"]).unwrap();
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reasons.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "dead letters so far: {reasons:?}");
        let Ok(message) = tokio::time::timeout(left, dead.recv()).await else {
            continue;
        };
        let message = message.unwrap();
        let reason = message
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "lethe-reason")
                    .and_then(|h| h.value)
            })
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        reasons.push(reason);
    }
    reasons
}
