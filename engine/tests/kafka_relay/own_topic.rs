//! Kafka cleaners with a topic of their own (ADR 5): every attempt, the first included, arrives
//! on the cleaner's topic with exactly its identifiers, keyed as configured, and the results
//! complete the requests; the relay's Due topic carries no identifier; a batch is one message.

use std::collections::BTreeSet;

use lethe_engine::cleaners::kafka::{KafkaCleaner, OwnTopic};
use lethe_engine::cleaners::{Attempt, Cleaner, Outcome};
use lethe_engine::config::PartitionKey;
use lethe_engine::kafka::RenewingProducer;
use lethe_engine::store::master_key::MasterKey;

use super::support::config::TestConfig;
use super::*;

const SEARCH_TOPIC: &str = "lethe.erase.search";
const CRM_TOPIC: &str = "lethe.erase.crm";
const RESULTS: &str = "lethe.cleaner-results";

/// `search` has a topic of its own, sees only `email`, is keyed by subject and fails its
/// first attempts; `crm` has one too, sees only `user_id`, is batched and keyed by request;
/// `legacy` reads the relay's Due messages as before.
const CLEANERS: &str = r#"
[[cleaners]]
name = "search"
kind = "kafka"
topic = "lethe.erase.search"
partition_key = "subject"
identifiers = ["email"]
callback_timeout = "10m"
retry = { max_attempts = 4, initial = "100ms", max = "200ms", multiplier = 2.0 }

[[cleaners]]
name = "crm"
kind = "kafka"
topic = "lethe.erase.crm"
identifiers = ["user_id"]
batch = { max = 10, wait = "200ms" }
callback_timeout = "10m"

[[cleaners]]
name = "legacy"
kind = "kafka"
callback_timeout = "10m"
"#;

/// Three subjects: Ada twice (two requests about one person), and Bob.
fn subjects() -> [BTreeMap<String, String>; 3] {
    let subject = |email: &str, user_id: &str, phone: &str| {
        BTreeMap::from([
            ("email".to_owned(), email.to_owned()),
            ("user_id".to_owned(), user_id.to_owned()),
            ("phone".to_owned(), phone.to_owned()),
        ])
    };
    [
        subject("ada@example.com", "u-ada-1815", "+44 1815"),
        subject("ada@example.com", "u-ada-1815", "+44 1815"),
        subject("bob@example.com", "u-bob-1900", "+1 1900"),
    ]
}

/// Every identifier value of [`subjects`].
fn identifier_values() -> BTreeSet<String> {
    subjects()
        .iter()
        .flat_map(|s| s.values().cloned())
        .collect()
}

/// One message a service read.
#[derive(Debug, Clone)]
struct Read {
    key: String,
    headers: HashMap<String, String>,
    value: serde_json::Value,
}

fn read(message: &rdkafka::message::BorrowedMessage<'_>) -> Read {
    let mut headers = HashMap::new();
    for header in message.headers().into_iter().flat_map(|h| h.iter()) {
        headers.insert(
            header.key.to_owned(),
            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
        );
    }
    Read {
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        headers,
        value: serde_json::from_slice(message.payload().unwrap()).unwrap(),
    }
}

/// The requests a message asks cleaner `name` for, as (request id, attempt): a Due (attempt
/// 1, or the `attempt` of a retry) that plans or names it, an attempt, or a batch's attempts.
fn asks(value: &serde_json::Value, name: &str) -> Vec<(String, u64)> {
    let attempt = |v: &serde_json::Value| v.get("attempt").and_then(|a| a.as_u64()).unwrap_or(1);
    let request = |v: &serde_json::Value| v["request_id"].as_str().unwrap().to_owned();
    match value["type"].as_str() {
        Some("CleanerAttempt") if value["cleaner"] == name => {
            vec![(request(value), attempt(value))]
        }
        Some("CleanerAttemptBatch") if value["cleaner"] == name => value["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| (request(item), attempt(item)))
            .collect(),
        Some("Due") => {
            let mine = match value.get("cleaner") {
                Some(cleaner) => cleaner == name,
                None => value["data"]["cleaners"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["name"] == name)),
            };
            if mine {
                vec![(request(value), attempt(value))]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// Cleaner `name`'s service: reads `topic`, logs every message, and answers each request it
/// is asked for on the results topic, by itself: failed (retryably) before attempt
/// `succeed_at`, succeeded from it.
fn start_service(
    brokers: String,
    topic: &'static str,
    name: &'static str,
    succeed_at: u64,
    log: Arc<std::sync::Mutex<Vec<Read>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("{name}-service"))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let producer = producer::<FutureProducer>(&brokers).unwrap();
        loop {
            let Ok(message) = consumer.recv().await else {
                return;
            };
            let message = read(&message);
            for (request_id, attempt) in asks(&message.value, name) {
                let outcome = if attempt < succeed_at {
                    "failed"
                } else {
                    "succeeded"
                };
                let result = serde_json::json!({
                    "request_id": request_id,
                    "cleaner": name,
                    "attempt": attempt,
                    "outcome": outcome,
                    "retryable": true,
                })
                .to_string();
                producer
                    .send(
                        rdkafka::producer::FutureRecord::to(RESULTS)
                            .key(&request_id)
                            .payload(&result),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
            }
            log.lock().unwrap().push(message);
        }
    })
}

fn mock_cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for topic in [
        "lethe.due",
        "lethe.completed",
        "lethe.cancelled",
        RESULTS,
        "lethe.dead-letter",
        SEARCH_TOPIC,
        CRM_TOPIC,
    ] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    cluster
}

/// How many messages `topic` holds.
fn messages_on(brokers: &str, topic: &str) -> i64 {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "watermarks")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    high - low
}

/// Own-topic cleaners get every attempt on their topic with exactly their identifiers, keyed
/// as configured; the Due topic carries none; the results complete every request.
async fn own_topic_cleaners_get_every_attempt_with_only_their_identifiers(t: support::TestStore) {
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let text = TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .kafka(&brokers)
        .toml()
        + CLEANERS;
    let config = Arc::new(Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")));
    // Only `legacy` takes the relay's Due as its attempt 1.
    assert_eq!(
        lethe_engine::kafka::kafka_cleaners(&config)
            .keys()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["legacy"]
    );
    let database = t.database();
    let requests = Requests::new(database.events.clone(), config.clone());
    let runtime = lethe_engine::root::Runtime::start(
        requests.clone(),
        database.workflow.clone(),
        config,
        MasterKey::from_bytes([6; 32]),
        "http://127.0.0.1:1".to_owned(),
    )
    .unwrap();
    let logs: [Arc<std::sync::Mutex<Vec<Read>>>; 3] = Default::default();
    let services = [
        start_service(brokers.clone(), SEARCH_TOPIC, "search", 2, logs[0].clone()),
        start_service(brokers.clone(), CRM_TOPIC, "crm", 1, logs[1].clone()),
        start_service(brokers.clone(), "lethe.due", "legacy", 1, logs[2].clone()),
    ];
    let mut ids = Vec::new();
    for subject in subjects() {
        let submission = Submission {
            subject,
            ..Submission::default()
        };
        let submitted = requests.submit(submission, None, "test").await.unwrap();
        ids.push(submitted.loaded.request.id);
    }
    every_request_completes_as_its_cleaners_answered(&requests, &ids).await;

    let search = logs[0].lock().unwrap().clone();
    search_got_its_attempts_with_only_the_email(&search, &ids);
    // Two attempts per request, nothing else, on the search topic.
    assert_eq!(messages_on(&brokers, SEARCH_TOPIC), 6);
    let crm = logs[1].lock().unwrap().clone();
    let crm_items: Vec<&serde_json::Value> = crm
        .iter()
        .inspect(|m| assert_eq!(m.value["type"], "CleanerAttemptBatch"))
        .flat_map(|m| m.value["requests"].as_array().unwrap())
        .collect();
    assert_eq!(crm_items.len(), 3);
    let subject_of: HashMap<String, BTreeMap<String, String>> = ids
        .iter()
        .map(ToString::to_string)
        .zip(subjects())
        .collect();
    for item in crm_items {
        let subject = &subject_of[item["request_id"].as_str().unwrap()];
        let only_user_id = serde_json::json!({"user_id": subject["user_id"]});
        assert_eq!(item["subject"], only_user_id);
    }
    // The Due topic, read by every subscriber, carries no identifier.
    let due = logs[2].lock().unwrap().clone();
    assert!(due.iter().any(|m| m.value["type"] == "Due"));
    for message in &due {
        let text = message.value.to_string();
        for value in identifier_values() {
            assert!(!text.contains(&value), "{value} on the Due topic: {text}");
        }
    }
    for service in services {
        service.abort();
    }
    runtime.stop().await;
}

/// Waits for every request to complete, and checks its history: `search` failed attempt 1
/// and succeeded on 2, `crm` and `legacy` succeeded on 1.
async fn every_request_completes_as_its_cleaners_answered(requests: &Requests, ids: &[RequestId]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in ids {
        loop {
            let loaded = requests.load(*id).await.unwrap().unwrap();
            if loaded.request.status() == lethe_domain::RequestStatus::Completed {
                let attempts = |event_type: &str| -> Vec<(String, u64)> {
                    loaded
                        .events
                        .iter()
                        .filter(|e| e.event_type == event_type)
                        .map(|e| {
                            let cleaner = e.payload["cleaner"].as_str().unwrap().to_owned();
                            (cleaner, e.payload["attempt"].as_u64().unwrap())
                        })
                        .collect()
                };
                assert_eq!(attempts("CleanerFailed"), [("search".to_owned(), 1)]);
                let mut succeeded = attempts("CleanerSucceeded");
                succeeded.sort();
                assert_eq!(
                    succeeded,
                    [
                        ("crm".into(), 1),
                        ("legacy".into(), 1),
                        ("search".into(), 2)
                    ]
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not completed: {:?}",
                loaded.request.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `search`'s messages: attempts 1 and 2 of every request, each with its own id and headers,
/// exactly the email, keyed by the subject (the same for Ada's two requests, another for
/// Bob's, never an identifier).
fn search_got_its_attempts_with_only_the_email(search: &[Read], ids: &[RequestId]) {
    let mut asked: Vec<(String, u64)> = search
        .iter()
        .flat_map(|m| asks(&m.value, "search"))
        .collect();
    asked.sort();
    let mut wanted: Vec<(String, u64)> = ids
        .iter()
        .flat_map(|id| [(id.to_string(), 1), (id.to_string(), 2)])
        .collect();
    wanted.sort();
    assert_eq!(asked, wanted);
    let mut keys = HashMap::new();
    let mut message_ids = BTreeSet::new();
    for message in search {
        let value = &message.value;
        assert_eq!(value["type"], "CleanerAttempt");
        assert_eq!(message.headers["lethe-event-type"], "CleanerAttempt");
        assert_eq!(message.headers["lethe-cleaner"], "search");
        assert_eq!(
            message.headers["lethe-attempt"],
            value["attempt"].to_string()
        );
        assert_eq!(message.headers["lethe-event-id"], value["event_id"]);
        assert_eq!(value["attempt_id"], value["event_id"]);
        assert!(message_ids.insert(message.headers["lethe-event-id"].clone()));
        assert_eq!(value["results_topic"], RESULTS);
        let request = value["request_id"].as_str().unwrap();
        assert_eq!(
            value["callback_url"],
            format!("http://127.0.0.1:1/v1/requests/{request}/cleaners/search/result")
        );
        assert_eq!(value["idempotency_key"], format!("{request}:search"));
        let subject = value["subject"].as_object().unwrap();
        assert_eq!(subject.keys().collect::<Vec<_>>(), ["email"]);
        for identifier in identifier_values() {
            assert!(!message.key.contains(&identifier));
        }
        if let Some(before) = keys.insert(request.to_owned(), message.key.clone()) {
            assert_eq!(before, message.key, "one request, one key");
        }
    }
    let key = |i: usize| keys[&ids[i].to_string()].clone();
    assert_eq!(key(0), key(1), "one person's requests share a key");
    assert_ne!(key(0), key(2), "two people get two keys");
    assert_ne!(key(0), ids[0].to_string());
}

/// `attempt_batch` of a batched own-topic cleaner publishes one message carrying every
/// request, each with its own attempt, and accepts them all with `callback_timeout`.
async fn a_batch_is_one_message(t: support::TestStore) {
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let config = Arc::new(TestConfig::new().build());
    let database = t.database();
    let requests = Requests::new(database.events.clone(), config);
    let mut loaded = Vec::new();
    for subject in subjects() {
        let submission = Submission {
            subject,
            ..Submission::default()
        };
        loaded.push(
            requests
                .submit(submission, None, "test")
                .await
                .unwrap()
                .loaded,
        );
    }
    let cleaner = KafkaCleaner::new(
        Some(Arc::new(producer::<RenewingProducer>(&brokers).unwrap())),
        None,
        Duration::from_secs(600),
    )
    .with_own_topic(OwnTopic {
        topic: CRM_TOPIC.to_owned(),
        results_topic: RESULTS.to_owned(),
        partition_key: PartitionKey::Request,
        identifiers: Some(BTreeSet::from(["user_id".to_owned()])),
        batched: true,
        keys: None,
    });
    let crm = lethe_domain::CleanerName::parse("crm").unwrap();
    let subjects = subjects();
    let now = chrono::Utc::now();
    let attempts: Vec<Attempt<'_>> = loaded
        .iter()
        .zip(&subjects)
        .enumerate()
        .map(|(i, (l, subject))| Attempt {
            request: &l.request,
            cleaner: &crm,
            attempt: u32::try_from(i).unwrap() + 1,
            subject: Some(subject),
            due: None,
            public_url: "https://lethe.example",
            now,
        })
        .collect();
    let outcomes = cleaner.attempt_batch(&attempts).await;
    assert_eq!(outcomes.len(), 3);
    for outcome in outcomes {
        let Ok(Outcome::Accepted { deadline }) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(deadline >= now + chrono::TimeDelta::seconds(600));
    }
    assert_eq!(messages_on(&brokers, CRM_TOPIC), 1);
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let service = start_service(brokers.clone(), CRM_TOPIC, "none", 1, log.clone());
    let wait = Instant::now() + Duration::from_secs(30);
    while log.lock().unwrap().is_empty() {
        assert!(Instant::now() < wait, "the batch did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.abort();
    let message = log.lock().unwrap()[0].clone();
    assert_eq!(message.headers["lethe-event-type"], "CleanerAttemptBatch");
    assert_eq!(message.headers["lethe-batch-size"], "3");
    assert_eq!(message.headers["lethe-cleaner"], "crm");
    assert_eq!(message.value["cleaner"], "crm");
    assert_eq!(message.value["results_topic"], RESULTS);
    let items = message.value["requests"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["request_id"], loaded[i].request.id.to_string());
        assert_eq!(item["attempt"], i + 1);
        assert_eq!(
            item["subject"],
            serde_json::json!({"user_id": subjects[i]["user_id"]})
        );
        assert_eq!(item["cleaner"], "crm");
    }
    let item_ids: BTreeSet<&str> = items
        .iter()
        .map(|i| i["attempt_id"].as_str().unwrap())
        .collect();
    assert_eq!(item_ids.len(), 3);
    assert!(!item_ids.contains(message.headers["lethe-event-id"].as_str()));
    assert_eq!(message.key, message.headers["lethe-event-id"]);
}

support::backends!(
    own_topic_cleaners_get_every_attempt_with_only_their_identifiers,
    a_batch_is_one_message,
);
