//! `kind = "kafka"` cleaners: a cleaner consumes the Due messages and answers on the results
//! topic (docs/KAFKA.md). Attempt 1 is the Due event itself, which the relay publishes (and
//! whose `callback_timeout` starts once the broker acknowledged it, ADR 19); a retry publishes
//! the Due message again for this cleaner, with its attempt number ([`Message::retry`]), and
//! its `callback_timeout` starts at the broker's ack of it. Either way the result comes on the
//! results topic, or the attempt fails after `callback_timeout`.

pub mod message;
mod producer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use lethe_domain::CleanerName;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{Attempt, Cleaner, CleanerError, Outcome};
use crate::store::RecordedEvent;
use crate::telemetry::metrics;
pub use message::{message_value, Message};
pub use producer::{producer, FromBrokers, RenewingProducer};

/// One configured Kafka cleaner.
#[derive(Debug, Clone)]
pub struct KafkaCleaner {
    /// What retries are published with; `None` when it could not be created (each retry then
    /// waits for a later try).
    producer: Option<Arc<RenewingProducer>>,
    /// The topic of the Due event.
    topic: Option<String>,
    callback_timeout: Duration,
}

impl KafkaCleaner {
    pub const fn new(
        producer: Option<Arc<RenewingProducer>>,
        topic: Option<String>,
        callback_timeout: Duration,
    ) -> Self {
        Self {
            producer,
            topic,
            callback_timeout,
        }
    }
}

#[async_trait]
impl Cleaner for KafkaCleaner {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        if attempt.attempt == 1 {
            return Ok(Outcome::Awaiting);
        }
        let (Some(topic), Some(producer)) = (&self.topic, &self.producer) else {
            // The config check requires a published Due, so only a producer that could not be
            // created gets here: the retry must not vanish, it is tried again later.
            return Err(CleanerError::Unavailable(
                "kafka: no producer to publish the retry with".to_owned(),
            ));
        };
        let due = attempt
            .due
            .ok_or_else(|| CleanerError::Corrupt("a cleaning request without Due".to_owned()))?;
        let started = Instant::now();
        let sent = publish_retry(
            &producer.current(),
            topic,
            due,
            attempt.cleaner,
            attempt.attempt,
        )
        .await;
        if let Err(error) = sent {
            // A producer broken by an outage stays broken: the next try gets a new one (see
            // `RenewingProducer`).
            producer.renew();
            return Err(CleanerError::Unavailable(error));
        }
        metrics::cleaner_call(
            attempt.cleaner.as_str(),
            self.kind(),
            started.elapsed().as_secs_f64(),
        );
        // From the broker's ack of the retry (the publish above waited for it).
        let deadline = Utc::now()
            + chrono::TimeDelta::from_std(self.callback_timeout).unwrap_or(chrono::TimeDelta::MAX);
        Ok(Outcome::Accepted { deadline })
    }
}

/// Publishes the Due message again for one Kafka cleaner's retry ([`Message::retry`]: the
/// attempt number, and an id of its own that is the same every time this attempt is published).
pub async fn publish_retry(
    producer: &FutureProducer,
    topic: &str,
    due: &RecordedEvent,
    cleaner: &CleanerName,
    attempt: u32,
) -> Result<(), String> {
    let message = Message::retry(due, cleaner, attempt);
    let value = message.value.to_string();
    let record = FutureRecord::to(topic)
        .key(&message.key)
        .payload(&value)
        .headers(message.kafka_headers());
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(error, _)| format!("kafka: {error}"))
}
