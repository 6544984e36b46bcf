//! Retries reach a consumer that deduplicates on `lethe-event-id`; a repeat does not.

use super::support::config::{Cleaner, TestConfig};
use super::support::engine::TestEngine;
use super::*;

/// One message a deduplicating cleaner read, and whether it acted on it.
#[derive(Debug, Clone)]
struct Delivery {
    headers: HashMap<String, String>,
    value: serde_json::Value,
    acted: bool,
}

impl Delivery {
    fn attempt(&self) -> u64 {
        self.value
            .get("attempt")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1)
    }
}

/// The Kafka cleaner `search`, written exactly as docs/KAFKA.md ("A Kafka cleaner") tells one
/// to: it drops a message whose `lethe-event-id` it has seen, acts on a plain Due that plans it
/// and on a retry addressed to it, and answers with the message's attempt. It fails (retryably)
/// every attempt before `succeed_at`.
fn start_deduplicating_cleaner(
    brokers: String,
    succeed_at: u64,
    log: Arc<std::sync::Mutex<Vec<Delivery>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "deduplicating-search")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&["lethe.due"]).unwrap();
        let producer = producer::<FutureProducer>(&brokers).unwrap();
        let mut seen = std::collections::HashSet::new();
        loop {
            let Ok(message) = consumer.recv().await else {
                return;
            };
            let mut headers = HashMap::new();
            for header in message.headers().into_iter().flat_map(|h| h.iter()) {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap()).unwrap();
            let first_time = seen.insert(headers["lethe-event-id"].clone());
            let mine = match value.get("cleaner") {
                Some(cleaner) => cleaner == "search",
                None => value["data"]["cleaners"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["name"] == "search")),
            };
            let mut delivery = Delivery {
                headers,
                value,
                acted: first_time && mine,
            };
            if delivery.acted {
                let attempt = delivery.attempt();
                let outcome = if attempt < succeed_at {
                    "failed"
                } else {
                    "succeeded"
                };
                let result = serde_json::json!({
                    "request_id": delivery.value["request_id"],
                    "cleaner": "search",
                    "attempt": attempt,
                    "outcome": outcome,
                    "retryable": true,
                    "deleted": {"documents": 2},
                })
                .to_string();
                let key = delivery.value["request_id"].as_str().unwrap().to_owned();
                let sent = producer
                    .send(
                        rdkafka::producer::FutureRecord::to("lethe.cleaner-results")
                            .key(&key)
                            .payload(&result),
                        Duration::from_secs(10),
                    )
                    .await;
                delivery.acted = sent.is_ok();
            }
            log.lock().unwrap().push(delivery);
        }
    })
}

/// Every retry of a Kafka cleaner reaches a consumer that deduplicates on `lethe-event-id`, with
/// every documented header; the same attempt published again is dropped by it.
async fn every_retry_reaches_a_deduplicating_cleaner_and_a_repeat_does_not(t: support::TestStore) {
    let cluster = MockCluster::new(1).unwrap();
    for topic in [
        "lethe.due",
        "lethe.completed",
        "lethe.cancelled",
        "lethe.cleaner-results",
        "lethe.dead-letter",
    ] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    // A missing result would fail the attempt only after 10 minutes: the request completes
    // within the deadline only if the cleaner acts on each retry the moment it arrives.
    let config = TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .kafka(&brokers)
        .cleaner(
            Cleaner::kafka("search")
                .callback_timeout("10m")
                .retry(4, "100ms", "200ms", 2.0),
        );
    let engine = TestEngine::spawn(&t, config).await;
    let requests = &engine.requests;
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cleaner = start_deduplicating_cleaner(brokers.clone(), 3, log.clone());
    let id = submit(requests, 0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let loaded = loop {
        let loaded = requests.load(id).await.unwrap().unwrap();
        if loaded.request.status() == lethe_domain::RequestStatus::Completed {
            break loaded;
        }
        assert!(
            Instant::now() < deadline,
            "not completed: {:?}; the cleaner read {:#?}",
            loaded.request.status(),
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attempts = |event_type: &str| -> Vec<serde_json::Value> {
        loaded
            .events
            .iter()
            .filter(|e| e.event_type == event_type)
            .map(|e| e.payload["attempt"].clone())
            .collect()
    };
    assert_eq!(attempts("CleanerFailed"), [1, 2]);
    assert_eq!(attempts("CleanerSucceeded"), [3]);

    // What the cleaner acted on: the Due itself, then one message per retry, each with the
    // documented headers and an id of its own.
    let due = loaded
        .events
        .iter()
        .find(|e| e.event_type == "Due")
        .unwrap();
    let acted: Vec<Delivery> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.acted)
        .cloned()
        .collect();
    assert_eq!(
        acted.iter().map(Delivery::attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    every_message_has_its_id_and_headers(&acted, due, id);

    the_same_attempt_again_is_dropped(&brokers, due, &log).await;
    cleaner.abort();
    engine.stop().await;
}

/// Each message the cleaner acted on has an id of its own; the first is the plain Due, and each
/// retry carries the documented headers and the Due's data.
fn every_message_has_its_id_and_headers(
    acted: &[Delivery],
    due: &lethe_engine::store::RecordedEvent,
    id: RequestId,
) {
    let ids: std::collections::HashSet<&str> = acted
        .iter()
        .map(|d| d.headers["lethe-event-id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "each message has its own id");
    assert_eq!(acted[0].headers["lethe-event-id"], due.event_id.to_string());
    assert_eq!(
        acted[0].value.get("cleaner"),
        None,
        "attempt 1 is the plain Due"
    );
    for retry in &acted[1..] {
        assert_eq!(retry.headers["lethe-event-type"], "Due");
        assert_eq!(
            retry.headers["lethe-schema-version"],
            due.schema_version.to_string()
        );
        assert_eq!(
            retry.headers["lethe-correlation-id"],
            due.correlation_id.to_string()
        );
        assert_eq!(retry.headers["lethe-cleaner"], "search");
        assert_eq!(retry.headers["lethe-attempt"], retry.attempt().to_string());
        assert_eq!(
            retry.value["event_id"],
            retry.headers["lethe-event-id"].as_str()
        );
        assert_eq!(retry.value["due_event_id"], due.event_id.to_string());
        assert_eq!(retry.value["request_id"], id.to_string());
        assert_eq!(retry.value["data"], due.payload);
    }
}

/// Attempt 2 published again, as after a crash between its publish and the record of it: the
/// same message id, which the cleaner drops.
async fn the_same_attempt_again_is_dropped(
    brokers: &str,
    due: &lethe_engine::store::RecordedEvent,
    log: &std::sync::Mutex<Vec<Delivery>>,
) {
    let search = lethe_domain::CleanerName::parse("search").unwrap();
    lethe_engine::kafka::publish_retry(
        &producer::<FutureProducer>(brokers).unwrap(),
        "lethe.due",
        due,
        &search,
        2,
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let deliveries = log.lock().unwrap().clone();
        let second: Vec<&Delivery> = deliveries.iter().filter(|d| d.attempt() == 2).collect();
        if second.len() == 2 {
            assert_eq!(
                second[0].headers["lethe-event-id"],
                second[1].headers["lethe-event-id"]
            );
            assert!(second[0].acted && !second[1].acted, "{second:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the repeat never arrived: {deliveries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
support::backends!(every_retry_reaches_a_deduplicating_cleaner_and_a_repeat_does_not);
