//! The Kafka relay on librdkafka's in-process mock cluster: the configured event types are
//! published once each with key = request id, the documented headers and JSON value, in log
//! order per key; the checkpoint moves only after the broker acknowledged; with the broker down
//! nothing is lost and the backlog is delivered once it is back. Kafka cleaners: results,
//! dead letters, and retries that a consumer deduplicating as docs/KAFKA.md says acts on.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_domain::{Command, RequestId};
use lethe_engine::app::{Requests, Submission};
use lethe_engine::config::Config;
use lethe_engine::kafka::{producer, KafkaRelay, RELAY};
use lethe_engine::root::Database;
use lethe_engine::store::EventMetadata;
use lethe_engine::subscriptions::SubscriptionRunner;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

const TOPIC: &str = "lethe.events";

fn runner(database: &Database) -> SubscriptionRunner {
    SubscriptionRunner {
        events: database.events.clone(),
        subscriptions: database.workflow.clone(),
        owner: "relay-test".to_owned(),
        lease: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
    }
}

async fn submit(requests: &Requests, n: usize) -> RequestId {
    requests
        .submit(
            Submission {
                subject: BTreeMap::from([("user_id".to_owned(), format!("k{n}"))]),
                ..Submission::default()
            },
            None,
            "test",
        )
        .await
        .unwrap()
        .loaded
        .request
        .id
}

/// Relays until the relay's checkpoint reaches the log's head.
async fn relay_all(database: &Database, relay: &KafkaRelay) {
    let runner = runner(database);
    let head = database.events.head_position().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = runner.round(relay).await.unwrap();
        let at = database
            .workflow
            .subscription_checkpoint(RELAY)
            .await
            .unwrap()
            .unwrap_or_default();
        if n == 0 && at.position >= head {
            return;
        }
        assert!(Instant::now() < deadline, "the relay did not catch up");
    }
}

#[derive(Debug)]
struct Received {
    key: String,
    headers: HashMap<String, String>,
    value: serde_json::Value,
}

async fn consume(brokers: &str, expected: usize) -> Vec<Received> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {expected} messages arrived",
            received.len()
        );
        let Ok(message) = tokio::time::timeout(left, consumer.recv()).await else {
            continue;
        };
        let message = message.unwrap();
        let mut headers = HashMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        received.push(Received {
            key: String::from_utf8_lossy(message.key().unwrap()).into_owned(),
            headers,
            value: serde_json::from_slice(message.payload().unwrap()).unwrap(),
        });
    }
    received
}

fn config() -> Config {
    Config::parse(
        "[kafka]\nbrokers = \"unused\"\npublish = { Received = \"lethe.events\", Due = \"lethe.events\", \
         Completed = \"lethe.events\", Cancelled = \"lethe.events\" }\n",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_events_are_published_once_in_order_per_request() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let store = support::sqlite().await;
    let database = store.database();
    let config = config();
    let requests = Requests::new(database.events.clone(), Arc::new(config.clone()));
    let relay = KafkaRelay {
        producer: producer(&brokers).unwrap(),
        topics: config.kafka.clone().unwrap().publish,
        workflow: database.workflow.clone(),
        kafka_cleaners: lethe_engine::kafka::kafka_cleaners(&config),
    };
    let meta = EventMetadata::new("test");
    let mut ids = Vec::new();
    for n in 0..6 {
        let id = submit(&requests, n).await;
        if n % 2 == 0 {
            // Due now with no cleaners: Due and Completed at once.
            requests
                .execute(id, &meta, |_| Command::MarkDue {
                    at: chrono::Utc::now(),
                    cleaners: vec![],
                    expedite: true,
                })
                .await
                .unwrap();
        } else {
            requests
                .execute(id, &meta, |_| Command::Cancel {
                    at: chrono::Utc::now(),
                    reason: None,
                })
                .await
                .unwrap();
        }
        ids.push(id);
    }
    // Only the configured types: 6 Received + 3 × (Due, Completed) + 3 Cancelled = 15.
    relay_all(&database, &relay).await;
    let messages = consume(&brokers, 15).await;
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for message in &messages {
        assert_eq!(message.value["request_id"], message.key);
        assert_eq!(
            message.headers["lethe-event-id"],
            message.value["event_id"].as_str().unwrap()
        );
        assert_eq!(
            message.headers["lethe-event-type"],
            message.value["type"].as_str().unwrap()
        );
        assert_eq!(message.headers["lethe-schema-version"], "1");
        assert!(message.headers.contains_key("lethe-correlation-id"));
        assert!(message.value["position"].is_i64() && message.value["recorded_at"].is_string());
        by_key
            .entry(message.key.clone())
            .or_default()
            .push(message.value["type"].as_str().unwrap().to_owned());
    }
    for (n, id) in ids.iter().enumerate() {
        let expected: &[&str] = if n % 2 == 0 {
            &["Received", "Due", "Completed"]
        } else {
            &["Received", "Cancelled"]
        };
        assert_eq!(by_key[&id.to_string()], expected, "request {n}");
    }
    let unique: std::collections::HashSet<_> = messages
        .iter()
        .map(|m| m.headers["lethe-event-id"].clone())
        .collect();
    assert_eq!(unique.len(), messages.len(), "each event published once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_nothing_moves_and_the_backlog_drains_after() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let store = support::sqlite().await;
    let database = store.database();
    let config = config();
    let requests = Requests::new(database.events.clone(), Arc::new(config.clone()));
    let relay = Arc::new(KafkaRelay {
        producer: producer(&brokers).unwrap(),
        topics: config.kafka.clone().unwrap().publish,
        workflow: database.workflow.clone(),
        kafka_cleaners: lethe_engine::kafka::kafka_cleaners(&config),
    });
    submit(&requests, 0).await;
    relay_all(&database, &relay).await;
    let before = database
        .workflow
        .subscription_checkpoint(RELAY)
        .await
        .unwrap()
        .unwrap();

    cluster.broker_down(1).unwrap();
    for n in 1..4 {
        submit(&requests, n).await;
    }
    let round = {
        let database = database.clone();
        let relay = relay.clone();
        tokio::spawn(async move { runner(&database).round(&*relay).await })
    };
    // While the broker is down the round cannot finish, and the checkpoint stays put.
    let waited = tokio::time::timeout(Duration::from_millis(1500), async {
        while !round.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_err(),
        "the relay finished a round with the broker down"
    );
    assert_eq!(
        database
            .workflow
            .subscription_checkpoint(RELAY)
            .await
            .unwrap()
            .unwrap(),
        before
    );

    cluster.broker_up(1).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), round)
        .await
        .unwrap()
        .unwrap();
    // Delivered after all (librdkafka retried), or failed after its timeout: either way the
    // next rounds publish whatever is left.
    let _ = result;
    relay_all(&database, &relay).await;
    let messages = consume(&brokers, 4).await;
    let keys: std::collections::HashSet<_> = messages.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys.len(), 4, "every request's Received was delivered");
    assert!(
        database
            .workflow
            .subscription_checkpoint(RELAY)
            .await
            .unwrap()
            .unwrap()
            > before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_producer_failed_for_good_the_relay_publishes_through_a_new_one() {
    use rdkafka::producer::Producer;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let store = support::sqlite().await;
    let database = store.database();
    let config = config();
    let requests = Requests::new(database.events.clone(), Arc::new(config.clone()));
    let relay = KafkaRelay {
        producer: producer(&brokers).unwrap(),
        topics: config.kafka.clone().unwrap().publish,
        workflow: database.workflow.clone(),
        kafka_cleaners: lethe_engine::kafka::kafka_cleaners(&config),
    };
    submit(&requests, 0).await;
    relay_all(&database, &relay).await;

    // A retried batch the broker then disowns (unknown producer id) is a fatal error for an
    // idempotent producer: librdkafka refuses every later message from it.
    let broken = relay.producer.current();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID,
        ],
    );
    submit(&requests, 1).await;
    let failed = runner(&database).round(&relay).await;
    assert!(failed.is_err(), "the round with the fatal error failed");
    assert!(
        broken.client().fatal_error().is_some(),
        "the old producer is broken for good"
    );
    assert!(relay.producer.current().client().fatal_error().is_none());

    // The next rounds publish the batch again through the new producer.
    submit(&requests, 2).await;
    relay_all(&database, &relay).await;
    let messages = consume(&brokers, 3).await;
    let keys: std::collections::HashSet<_> = messages.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys.len(), 3, "every request's Received was delivered");
}

#[tokio::test]
async fn without_a_kafka_section_there_is_no_relay() {
    assert!(Config::default().kafka.is_none());
    let config = Config::parse("[kafka]\nbrokers = \"127.0.0.1:9092\"\n").unwrap();
    let kafka = config.kafka.unwrap();
    assert_eq!(kafka.publish["Due"], "lethe.due");
    assert_eq!(kafka.publish["Completed"], "lethe.completed");
    assert_eq!(kafka.publish["Cancelled"], "lethe.cancelled");
    assert_eq!(kafka.results_topic, "lethe.cleaner-results");
}

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
    let database = store.database();
    let config = Arc::new(
        Config::parse(&format!(
            "[policy]\ngrace_period = \"1s\"\nreminders = []\n[engine]\npoll_interval = \"50ms\"\n\
             [kafka]\nbrokers = \"{brokers}\"\n\
             [[cleaners]]\nname = \"search\"\nkind = \"kafka\"\ncallback_timeout = \"60s\"\n"
        ))
        .unwrap(),
    );
    let requests = Requests::new(database.events.clone(), config.clone());
    let runtime = lethe_engine::root::Runtime::start(
        requests.clone(),
        database.workflow.clone(),
        config,
        lethe_engine::store::master_key::MasterKey::from_bytes([6; 32]),
        "http://127.0.0.1:1".to_owned(),
    );
    let service = start_search_service(brokers.clone());
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(submit(&requests, n).await);
    }
    let wait_completed = |ids: Vec<RequestId>| {
        let requests = requests.clone();
        async move {
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
    };
    wait_completed(ids.clone()).await;

    // Poisoned results: bad JSON, an unknown request, a result for a request already closed.
    let poison = producer::<FutureProducer>(&brokers).unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    let stale = serde_json::json!({"request_id": ids[0], "cleaner": "search", "attempt": 9, "outcome": "failed"}).to_string();
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
    let dead: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "dead-letter-reader")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    dead.subscribe(&["lethe.dead-letter"]).unwrap();
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reasons.len() < bad.len() {
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
    let later = submit(&requests, 10).await;
    wait_completed(vec![later]).await;
    service.abort();
    runtime.stop().await;
}

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
    let database = t.database();
    // A missing result would fail the attempt only after 10 minutes: the request completes
    // within the deadline only if the cleaner acts on each retry the moment it arrives.
    let config = Arc::new(
        Config::parse(&format!(
            "[policy]\ngrace_period = \"1s\"\nreminders = []\n[engine]\npoll_interval = \"50ms\"\n\
             [kafka]\nbrokers = \"{brokers}\"\n\
             [[cleaners]]\nname = \"search\"\nkind = \"kafka\"\ncallback_timeout = \"10m\"\n\
             retry = {{ max_attempts = 4, initial = \"100ms\", max = \"200ms\", multiplier = 2.0 }}\n"
        ))
        .unwrap(),
    );
    let requests = Requests::new(database.events.clone(), config.clone());
    let runtime = lethe_engine::root::Runtime::start(
        requests.clone(),
        database.workflow.clone(),
        config,
        lethe_engine::store::master_key::MasterKey::from_bytes([6; 32]),
        "http://127.0.0.1:1".to_owned(),
    );
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cleaner = start_deduplicating_cleaner(brokers.clone(), 3, log.clone());
    let id = submit(&requests, 0).await;
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

    // Attempt 2 published again, as after a crash between its publish and the record of it:
    // the same message id, which the cleaner drops.
    let search = lethe_domain::CleanerName::parse("search").unwrap();
    lethe_engine::kafka::publish_retry(
        &producer::<FutureProducer>(&brokers).unwrap(),
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
    cleaner.abort();
    runtime.stop().await;
}

/// `LETHE_KAFKA_BROKERS` with no `[kafka]` section: `lethe serve` publishes with the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lethe_kafka_brokers_alone_enables_kafka_with_the_defaults() {
    use std::process::Stdio;
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["lethe.due", "lethe.completed", "lethe.cancelled"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("lethe.db").display());
    let lethe = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lethe"));
        command
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("LETHE_MASTER_KEY_FILE", &key)
            .env("LETHE_DATABASE_URL", &database_url)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    };
    let run = |args: &'static [&'static str]| {
        let mut command = lethe(args);
        async move {
            let output = tokio::time::timeout(Duration::from_secs(60), command.output())
                .await
                .unwrap()
                .unwrap();
            assert!(output.status.success(), "{args:?}: {output:?}");
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let submitted: serde_json::Value =
        serde_json::from_str(&run(&["submit", "--subject", "user_id=7", "--json"]).await).unwrap();
    let id = submitted["id"].as_str().unwrap().to_owned();
    let mut cancel = lethe(&["cancel", &id]);
    cancel.stdout(Stdio::null());
    assert!(cancel.status().await.unwrap().success());

    let mut serve = lethe(&["serve", "--listen", "127.0.0.1:0"]);
    serve
        .env("LETHE_KAFKA_BROKERS", cluster.bootstrap_servers())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = serve.spawn().unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "env-enabled")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&["lethe.cancelled"]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("nothing was published to lethe.cancelled")
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(value["type"], "Cancelled");
    assert_eq!(value["request_id"], id.as_str());
    server.kill().await.unwrap();
}

/// Runs each test on a fresh database of each backend.
macro_rules! on_both_backends {
    ($($store:ident => [$($test:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $store {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        super::$test(super::support::$store().await).await;
                    }
                )*
            }
        )*
    };
}

on_both_backends!(
    postgres => [every_retry_reaches_a_deduplicating_cleaner_and_a_repeat_does_not],
    sqlite => [every_retry_reaches_a_deduplicating_cleaner_and_a_repeat_does_not],
);
