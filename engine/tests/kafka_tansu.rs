//! End to end on a real Kafka-compatible broker, tansu 0.6.0, run as a child process (see
//! `support/tansu.rs`; `scripts/tansu.sh` installs it): Lethe's own relay, results consumer and
//! saga against a broker that is killed and restarted in the middle of the run.
//!
//! - Every Due reaches a consumer, once per request and in log order per key, also for requests
//!   that became due while the broker was down; the relay recovers by itself.
//! - A Kafka cleaner service written here answers on the results topic and the requests
//!   complete, before and after a broker restart; poisoned results land on the dead-letter
//!   topic and the results consumer carries on.
//!
//! tansu's memory storage forgets everything on a restart, so the tests recreate the topics,
//! and only kill the broker once every acknowledged message has been consumed (a message the
//! broker acknowledged and then forgot is the storage's loss, not Lethe's).

mod support;
#[path = "support/tansu.rs"]
mod tansu;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lethe_domain::{Command, RequestId, RequestStatus};
use lethe_engine::app::{Requests, Submission};
use lethe_engine::config::Config;
use lethe_engine::kafka::{producer, KafkaRelay, RELAY};
use lethe_engine::root::Database;
use lethe_engine::store::EventMetadata;
use lethe_engine::subscriptions::SubscriptionRunner;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tansu::Tansu;

const EVENTS: &str = "lethe.events";
const DUE: &str = "lethe.due";
const RESULTS: &str = "lethe.cleaner-results";
const DEAD_LETTER: &str = "lethe.dead-letter";
const CLEANER_TOPICS: [&str; 5] = [
    DUE,
    "lethe.completed",
    "lethe.cancelled",
    RESULTS,
    DEAD_LETTER,
];

/// Lethe's own warnings (a failed relay round, a result that could not be recorded) in the
/// test's output, shown when a test fails; `LETHE_TEST_LOG` overrides the filter.
fn show_logs() {
    let filter = std::env::var("LETHE_TEST_LOG").unwrap_or_else(|_| "lethe_engine=info".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// One message as a consumer saw it.
#[derive(Debug, Clone)]
struct Seen {
    topic: String,
    key: String,
    headers: HashMap<String, String>,
    value: serde_json::Value,
}

impl Seen {
    fn event_id(&self) -> &str {
        &self.headers["lethe-event-id"]
    }

    fn event_type(&self) -> &str {
        self.value["type"].as_str().unwrap()
    }

    fn position(&self) -> i64 {
        self.value["position"].as_i64().unwrap()
    }
}

/// A consumer that keeps reading (through broker outages) and records what it saw.
#[derive(Debug)]
struct Collector {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    fn start(brokers: &str, topics: &[&str]) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("observer-{}", uuid::Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            // Auto-commit would commit the old positions to the restarted broker when the
            // consumer leaves the group to join it again.
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(topics).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let consumer = Arc::new(consumer);
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let task = tokio::spawn(async move {
            loop {
                let message = match consumer.recv().await {
                    Ok(message) => message,
                    Err(error) => {
                        rejoin_after_outage(&consumer, &topics, &error).await;
                        continue;
                    }
                };
                let mut headers = HashMap::new();
                for header in message.headers().iter().flat_map(|h| h.iter()) {
                    headers.insert(
                        header.key.to_owned(),
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                    );
                }
                sink.lock().unwrap().push(Seen {
                    topic: message.topic().to_owned(),
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    headers,
                    value: serde_json::from_slice(message.payload().unwrap_or_default())
                        .unwrap_or(serde_json::Value::Null),
                });
            }
        });
        Self { seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was seen, or fails after `limit`.
    async fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&[Seen]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if done(&self.seen()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {limit:?}; seen: {:#?}",
                self.seen()
                    .iter()
                    .map(|s| (s.topic.clone(), s.key.clone(), s.value["type"].clone()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// After every broker connection was lost: leaves the consumer group, and joins it again once
/// the topics can be seen, as Lethe's results consumer does (see `lethe_engine::kafka`): the
/// restarted broker no longer knows the topics this consumer was fetching, and librdkafka can
/// crash on its answer to such a fetch. Other errors are transient: librdkafka reconnects.
async fn rejoin_after_outage(
    consumer: &Arc<StreamConsumer>,
    topics: &[String],
    error: &rdkafka::error::KafkaError,
) {
    if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
        return;
    }
    consumer.unsubscribe();
    let visible = async {
        loop {
            let probe = consumer.clone();
            let wanted = topics.to_vec();
            let found = tokio::task::spawn_blocking(move || {
                let Ok(metadata) = probe.fetch_metadata(None, Duration::from_secs(5)) else {
                    return false;
                };
                wanted.iter().all(|name| {
                    metadata.topics().iter().any(|t| {
                        t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
            })
            .await
            .unwrap();
            if found {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // Meanwhile the errors of the outage are read and dropped.
    let drain = async {
        loop {
            let _ = consumer.recv().await;
        }
    };
    tokio::select! {
        () = visible => {}
        () = drain => {}
    }
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).unwrap();
}

/// Submits one request per `n`, and for an even `n` makes it due at once with no cleaners
/// (`Received`, `Due`, `Completed`); an odd one is cancelled (`Received`, `Cancelled`).
async fn submit(requests: &Requests, range: Range<usize>) -> Vec<RequestId> {
    let meta = EventMetadata::new("test");
    let mut ids = Vec::new();
    for n in range {
        let id = requests
            .submit(
                Submission {
                    subject: BTreeMap::from([("user_id".to_owned(), format!("u{n}"))]),
                    ..Submission::default()
                },
                None,
                "test",
            )
            .await
            .unwrap()
            .loaded
            .request
            .id;
        let command = if n % 2 == 0 {
            Command::MarkDue {
                at: chrono::Utc::now(),
                cleaners: vec![],
                expedite: true,
            }
        } else {
            Command::Cancel {
                at: chrono::Utc::now(),
                reason: None,
            }
        };
        requests
            .execute(id, &meta, |_| command.clone())
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// The event types each request has in the log, in log order, by request id.
async fn logged_types(requests: &Requests, ids: &[RequestId]) -> HashMap<String, Vec<String>> {
    let mut logged = HashMap::new();
    for id in ids {
        let loaded = requests.load(*id).await.unwrap().unwrap();
        logged.insert(
            id.to_string(),
            loaded.events.iter().map(|e| e.event_type.clone()).collect(),
        );
    }
    logged
}

async fn relay_position(database: &Database) -> i64 {
    database
        .workflow
        .subscription_checkpoint(RELAY)
        .await
        .unwrap()
        .unwrap_or_default()
        .position
}

/// Waits until the relay's checkpoint reaches `head`: every message acknowledged.
async fn wait_relayed(database: &Database, head: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while relay_position(database).await < head {
        assert!(
            Instant::now() < deadline,
            "the relay's checkpoint is at {} after {limit:?}, the log's head at {head}",
            relay_position(database).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message the log has for `ids` was seen: at least once each, by event id.
fn all_seen(seen: &[Seen], logged: &HashMap<String, Vec<String>>) -> bool {
    let mut counts: HashMap<&str, HashSet<&str>> = HashMap::new();
    for message in seen {
        counts
            .entry(message.key.as_str())
            .or_default()
            .insert(message.event_id());
    }
    logged
        .iter()
        .all(|(key, types)| counts.get(key.as_str()).map_or(0, HashSet::len) == types.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_due_reaches_a_consumer_once_in_order_per_key_across_a_broker_restart() {
    show_logs();
    let started = Instant::now();
    let mut broker = Tansu::start().await;
    broker.create_topics(&[EVENTS], 3).await;
    let brokers = broker.brokers();
    let store = support::sqlite().await;
    let database = store.database();
    let config = Config::parse(&format!(
        "[kafka]\nbrokers = \"{brokers}\"\npublish = {{ Received = \"{EVENTS}\", Due = \"{EVENTS}\", \
         Completed = \"{EVENTS}\", Cancelled = \"{EVENTS}\" }}\n"
    ))
    .unwrap();
    let requests = Requests::new(database.events.clone(), Arc::new(config.clone()));
    // The relay as `lethe serve` runs it: a subscription runner that retries by itself.
    let relay = KafkaRelay {
        producer: producer(&brokers).unwrap(),
        topics: config.kafka.clone().unwrap().publish,
        workflow: database.workflow.clone(),
        kafka_cleaners: lethe_engine::kafka::kafka_cleaners(&config),
    };
    let runner = SubscriptionRunner {
        events: database.events.clone(),
        subscriptions: database.workflow.clone(),
        owner: "tansu-test".to_owned(),
        lease: Duration::from_secs(60),
        poll_interval: Duration::from_millis(100),
    };
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let relay_task = tokio::spawn(async move { runner.run(&relay, stop).await });
    let observer = Collector::start(&brokers, &[EVENTS]);

    // Before the outage: everything published, acknowledged and consumed.
    let first = submit(&requests, 0..12).await;
    let first_logged = logged_types(&requests, &first).await;
    observer
        .wait_until(
            "every event of the first requests",
            Duration::from_secs(60),
            |seen| all_seen(seen, &first_logged),
        )
        .await;
    let head = database.events.head_position().await.unwrap();
    wait_relayed(&database, head, Duration::from_secs(30)).await;
    let before_outage = observer.seen().len();
    assert_eq!(
        before_outage,
        first_logged.values().map(Vec::len).sum::<usize>(),
        "without an outage each event is delivered exactly once"
    );

    // The broker dies; requests keep becoming due and wait in the log.
    broker.stop();
    let outage = Instant::now();
    let second = submit(&requests, 12..24).await;
    let second_logged = logged_types(&requests, &second).await;
    let head = database.events.head_position().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(
            relay_position(&database).await < head,
            "the relay moved its checkpoint to the head with the broker down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It comes back empty (memory storage): the topic is created again, and the relay, which
    // nobody restarts, publishes the backlog by itself.
    broker.restart().await;
    broker.create_topics(&[EVENTS], 3).await;
    let back = Instant::now();
    observer
        .wait_until(
            "every event of the requests that became due during the outage",
            Duration::from_secs(120),
            |seen| all_seen(seen, &second_logged),
        )
        .await;
    wait_relayed(&database, head, Duration::from_secs(30)).await;
    eprintln!(
        "outage {:?}, backlog delivered {:?} after the broker was back",
        back - outage,
        back.elapsed()
    );

    // Every Due exactly once per request after deduplication on lethe-event-id (delivery
    // is at least once: a batch cut by the outage may be published again), and each request's
    // events in log order: a message with a new event id never has an older position than one
    // seen before it for the same key.
    let seen = observer.seen();
    let mut by_key: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for message in &seen {
        assert_eq!(message.value["request_id"], message.key);
        assert_eq!(message.event_type(), message.headers["lethe-event-type"]);
        assert_eq!(message.value["event_id"], message.event_id());
        by_key
            .entry(message.key.as_str())
            .or_default()
            .push(message);
    }
    let mut repeats = 0;
    for (key, types) in first_logged.iter().chain(&second_logged) {
        let messages = &by_key[key.as_str()];
        let mut firsts: Vec<&Seen> = Vec::new();
        for message in messages {
            if let Some(earlier) = firsts.iter().find(|m| m.event_id() == message.event_id()) {
                assert_eq!(earlier.value, message.value, "a repeat is the same message");
                repeats += 1;
                continue;
            }
            if let Some(last) = firsts.last() {
                assert!(
                    message.position() > last.position(),
                    "request {key}: {} at {} arrived after {} at {}",
                    message.event_type(),
                    message.position(),
                    last.event_type(),
                    last.position()
                );
            }
            firsts.push(message);
        }
        let delivered: Vec<&str> = firsts.iter().map(|m| m.event_type()).collect();
        assert_eq!(&delivered, types, "request {key}");
        let dues = delivered.iter().filter(|t| **t == "Due").count();
        let expected = usize::from(types.iter().any(|t| t == "Due"));
        assert_eq!(dues, expected, "request {key}: Due once");
    }
    eprintln!(
        "{} messages seen for {} requests, {repeats} repeats (published again after the outage); {:?} in all",
        seen.len(),
        first.len() + second.len(),
        started.elapsed()
    );

    let _ = shutdown.send(true);
    tokio::time::timeout(Duration::from_secs(30), relay_task)
        .await
        .expect("the relay stops on shutdown")
        .unwrap();
}

/// A service that erases on Kafka, as a service owner would write it: it reads Due messages in
/// its consumer group, and for each request that plans the `search` cleaner answers on the
/// results topic with the attempt it was given. It rides out broker outages like the observer
/// does, and retries a result it could not send. Returns the request ids it answered for.
fn start_search_service(brokers: String) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<String>>>) {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let log = answered.clone();
    let task = tokio::spawn(async move {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "search-service")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[DUE]).unwrap();
        let results: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("acks", "all")
            .set("message.timeout.ms", "5000")
            .create()
            .unwrap();
        let consumer = Arc::new(consumer);
        loop {
            let message = match consumer.recv().await {
                Ok(message) => message,
                Err(error) => {
                    rejoin_after_outage(&consumer, &[DUE.to_owned()], &error).await;
                    continue;
                }
            };
            let due: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
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
            let key = due["request_id"].as_str().unwrap().to_owned();
            let result = serde_json::json!({
                "request_id": key,
                "cleaner": "search",
                "attempt": attempt,
                "outcome": "succeeded",
                "deleted": {"documents": 2},
            })
            .to_string();
            while let Err((error, _)) = results
                .send(
                    FutureRecord::to(RESULTS).key(&key).payload(&result),
                    Duration::from_secs(10),
                )
                .await
            {
                eprintln!("search service: sending a result failed, retrying: {error}");
            }
            log.lock().unwrap().push(key);
            // Committed only once answered (a failed commit means the Due is read again).
            let _ = consumer.commit_message(&message, rdkafka::consumer::CommitMode::Async);
        }
    });
    (task, answered)
}

async fn wait_completed(requests: &Requests, ids: &[RequestId], limit: Duration) {
    let deadline = Instant::now() + limit;
    for id in ids {
        loop {
            let loaded = requests.load(*id).await.unwrap().unwrap();
            if loaded.request.status() == RequestStatus::Completed {
                let success = loaded
                    .events
                    .iter()
                    .find(|e| e.event_type == "CleanerSucceeded")
                    .expect("completed by the cleaner's result");
                assert_eq!(success.actor, "cleaner:search");
                assert_eq!(success.payload["attempt"], 1);
                assert_eq!(success.payload["deleted"]["documents"], 2);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not complete within {limit:?}: {:?}",
                loaded.request.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn submit_plain(requests: &Requests, n: usize) -> RequestId {
    requests
        .submit(
            Submission {
                subject: BTreeMap::from([("user_id".to_owned(), format!("c{n}"))]),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_cleaner_completes_requests_across_a_broker_restart_and_poison_is_dead_lettered() {
    show_logs();
    let started = Instant::now();
    let mut broker = Tansu::start().await;
    // One partition each, and fewer requests after the restart than before: the consumers'
    // old positions then lie beyond the end of the new, empty log.
    broker.create_topics(&CLEANER_TOPICS, 1).await;
    let brokers = broker.brokers();
    let store = support::postgres().await;
    let database = store.database();
    // A callback timeout longer than the test: every result must come from the service, for
    // attempt 1, through the broker.
    let config = Arc::new(
        Config::parse(&format!(
            "[policy]\ngrace_period = \"1s\"\nreminders = []\n[engine]\npoll_interval = \"50ms\"\n\
             [kafka]\nbrokers = \"{brokers}\"\n\
             [[cleaners]]\nname = \"search\"\nkind = \"kafka\"\ncallback_timeout = \"10m\"\n"
        ))
        .unwrap(),
    );
    let requests = Requests::new(database.events.clone(), config.clone());
    let runtime = lethe_engine::root::Runtime::start(
        requests.clone(),
        database.workflow.clone(),
        config,
        lethe_engine::store::master_key::MasterKey::from_bytes([7; 32]),
        "http://127.0.0.1:1".to_owned(),
    );
    let (service, answered) = start_search_service(brokers.clone());

    let mut first = Vec::new();
    for n in 0..6 {
        first.push(submit_plain(&requests, n).await);
    }
    wait_completed(&requests, &first, Duration::from_secs(90)).await;
    eprintln!(
        "{} requests completed through tansu in {:?}",
        first.len(),
        started.elapsed()
    );

    // The broker dies with nothing in flight; new requests become due while it is down.
    broker.stop();
    let mut second = Vec::new();
    for n in 6..9 {
        second.push(submit_plain(&requests, n).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &second {
        loop {
            let status = requests.load(*id).await.unwrap().unwrap().request.status();
            if status == RequestStatus::Due {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not become due: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        answered
            .lock()
            .unwrap()
            .iter()
            .all(|k| !second.iter().any(|id| id.to_string() == *k)),
        "the service answered for a request while the broker was down"
    );

    // Back, empty: Lethe's relay and results consumer, which nobody restarts, carry on.
    broker.restart().await;
    broker.create_topics(&CLEANER_TOPICS, 1).await;
    let back = Instant::now();
    wait_completed(&requests, &second, Duration::from_secs(180)).await;
    eprintln!(
        "the requests due during the outage completed {:?} after the broker was back",
        back.elapsed()
    );

    // Poisoned results: not JSON, an unknown request, an attempt for a request already closed.
    let poison = producer::<FutureProducer>(&brokers).unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    let bad = [
        "not json".to_owned(),
        serde_json::json!({"request_id": unknown, "cleaner": "search", "attempt": 1, "outcome": "succeeded"})
            .to_string(),
        serde_json::json!({"request_id": first[0], "cleaner": "search", "attempt": 9, "outcome": "failed"})
            .to_string(),
    ];
    for payload in &bad {
        poison
            .send(
                FutureRecord::to(RESULTS).key("poison").payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let dead = Collector::start(&brokers, &[DEAD_LETTER]);
    dead.wait_until("three dead letters", Duration::from_secs(60), |seen| {
        seen.len() >= bad.len()
    })
    .await;
    let letters = dead.seen();
    let reasons: Vec<&str> = letters
        .iter()
        .map(|m| m.headers["lethe-reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), bad.len(), "{reasons:?}");
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
    assert!(letters.iter().all(|m| m.key == "poison"));

    // The results consumer went on after the poison.
    let later = submit_plain(&requests, 9).await;
    wait_completed(&requests, &[later], Duration::from_secs(60)).await;
    let answered = answered.lock().unwrap().clone();
    for id in first.iter().chain(&second).chain([&later]) {
        assert!(
            answered.contains(&id.to_string()),
            "the service never answered for {id}"
        );
    }
    eprintln!("{:?} in all", started.elapsed());
    service.abort();
    runtime.stop().await;
}
