//! End to end on a real Kafka-compatible broker, tansu 0.6.0, run as a child process (see
//! `support/tansu.rs`; `scripts/tansu.sh` installs it): Lethe's own relay, results consumer and
//! saga against a broker that is killed and restarted in the middle of the run.
//!
//! - Every Due reaches a consumer, once per request and in log order per key, also for requests
//!   that became due while the broker was down; the relay recovers by itself.
//! - A Kafka cleaner service written here answers on the results topic and the requests
//!   complete, before and after a broker restart; poisoned results land on the dead-letter
//!   topic and the results consumer carries on.
//! - A Kafka cleaner with a topic of its own gets every attempt there with only its
//!   identifiers, one person's attempts on one partition (`own_topic.rs`).
//!
//! tansu's memory storage forgets everything on a restart, so the tests recreate the topics,
//! and only kill the broker once every acknowledged message has been consumed (a message the
//! broker acknowledged and then forgot is the storage's loss, not Lethe's).

#[path = "../support/child.rs"]
mod child;
#[path = "../support/mod.rs"]
mod support;
#[path = "../support/tansu.rs"]
mod tansu;

mod cleaner;
mod own_topic;
mod relay;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lethe_domain::{Command, RequestId, RequestStatus};
use lethe_engine::app::{Requests, Submission};
use lethe_engine::kafka::{producer, KafkaRelay, RELAY};
use lethe_engine::root::Database;
use lethe_engine::store::EventMetadata;
use lethe_engine::subscriptions::SubscriptionRunner;
use lethe_engine::workflow::CallbackJobs;
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
                reason: None,
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
