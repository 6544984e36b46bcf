//! The Kafka relay on librdkafka's in-process mock cluster: the configured event types are
//! published once each with key = request id, the documented headers and JSON value, in log
//! order per key; the checkpoint moves only after the broker acknowledged; with the broker down
//! nothing is lost and the backlog is delivered once it is back. Kafka cleaners: results,
//! dead letters, and retries that a consumer deduplicating as docs/KAFKA.md says acts on.

#[path = "../support/mod.rs"]
mod support;

mod own_topic;
mod own_topic_outage;
mod relay;
mod results;
mod retries;

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
use lethe_engine::workflow::CallbackJobs;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use support::config::TestConfig;

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
    TestConfig::new()
        .kafka("unused")
        .publish(
            &["Received", "Due", "Completed", "Cancelled"],
            "lethe.events",
        )
        .build()
}
