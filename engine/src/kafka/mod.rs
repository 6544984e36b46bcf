//! Kafka: the relay that publishes chosen events of the log to topics.
//!
//! The relay is a checkpointed subscription like any other, so the log *is* the outbox: there
//! is no dual write. It publishes each batch with an idempotent producer (`acks=all`,
//! `enable.idempotence=true`), key = request id, and moves its checkpoint only after the broker
//! acknowledged every message of the batch. If the broker is down, nothing moves: the backlog
//! is published in order once it is back (at least once: consumers dedupe on `lethe-event-id`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

use crate::store::{Checkpoint, RecordedEvent, StoreError};
use crate::workflow::subscription::Projector;
use crate::workflow::WorkflowStore;

/// The subscription name of the relay.
pub const RELAY: &str = "kafka-relay";

/// `[kafka]` in lethe.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers; `LETHE_KAFKA_BROKERS` overrides.
    pub brokers: String,
    /// Event type → topic. Default: Due, Completed and Cancelled.
    #[serde(default = "default_publish")]
    pub publish: BTreeMap<String, String>,
    #[serde(default = "default_results_topic")]
    pub results_topic: String,
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
}

fn default_publish() -> BTreeMap<String, String> {
    [
        ("Due", "lethe.due"),
        ("Completed", "lethe.completed"),
        ("Cancelled", "lethe.cancelled"),
    ]
    .into_iter()
    .map(|(t, topic)| (t.to_owned(), topic.to_owned()))
    .collect()
}

fn default_results_topic() -> String {
    "lethe.cleaner-results".to_owned()
}

fn default_dead_letter_topic() -> String {
    "lethe.dead-letter".to_owned()
}

/// The JSON value of a published message (see `CONTRACT.md`).
pub fn message_value(event: &RecordedEvent) -> serde_json::Value {
    serde_json::json!({
        "event_id": event.event_id,
        "request_id": event.stream_id,
        "type": event.event_type,
        "position": event.position,
        "recorded_at": event.recorded_at,
        "data": event.payload,
    })
}

/// The idempotent producer the relay uses.
pub fn producer(brokers: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "5")
        .create()
}

/// Publishes the configured event types; see the module docs.
pub struct KafkaRelay {
    pub producer: FutureProducer,
    pub topics: BTreeMap<String, String>,
    pub workflow: Arc<dyn WorkflowStore>,
}

impl std::fmt::Debug for KafkaRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaRelay")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Projector for KafkaRelay {
    fn name(&self) -> &'static str {
        RELAY
    }

    async fn commit(
        &self,
        owner: &str,
        checkpoint: Checkpoint,
        events: &[RecordedEvent],
    ) -> Result<bool, StoreError> {
        // Enqueue every message in log order first (librdkafka keeps that order per
        // partition with idempotence on), then wait for every acknowledgement.
        let mut deliveries = Vec::new();
        for event in events {
            let Some(topic) = self.topics.get(&event.event_type) else {
                continue;
            };
            let key = event.stream_id.to_string();
            let value = message_value(event).to_string();
            let event_id = event.event_id.to_string();
            let schema_version = event.schema_version.to_string();
            let correlation_id = event.correlation_id.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "lethe-event-id",
                    value: Some(&event_id),
                })
                .insert(Header {
                    key: "lethe-event-type",
                    value: Some(&event.event_type),
                })
                .insert(Header {
                    key: "lethe-schema-version",
                    value: Some(&schema_version),
                })
                .insert(Header {
                    key: "lethe-correlation-id",
                    value: Some(&correlation_id),
                });
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => return Err(StoreError::Downstream(format!("kafka: {error}"))),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    return Err(StoreError::Downstream(format!("kafka: {error}")))
                }
                Err(_) => {
                    return Err(StoreError::Downstream(
                        "kafka: delivery cancelled".to_owned(),
                    ))
                }
            }
        }
        // Every message is acknowledged: only now may the checkpoint move.
        self.workflow
            .commit_subscription(RELAY, owner, checkpoint, &[])
            .await
    }
}

/// How long the relay waits between rounds when the broker fails.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
