//! `kind = "kafka"` cleaners: a cleaner consumes its work from Kafka and answers on the results
//! topic (docs/KAFKA.md).
//!
//! Without a topic of its own, attempt 1 is the Due event itself, which the relay publishes
//! (and whose `callback_timeout` starts once the broker acknowledged it, ADR 19); a retry
//! publishes the Due message again for this cleaner, with its attempt number
//! ([`Message::retry`]). With a topic of its own ([`OwnTopic`], ADR 5), every attempt, the
//! first included, is a message of its own on that topic carrying the subject's identifiers
//! the cleaner may see ([`attempt::single`]), and a batch is one message ([`attempt::batch`]).
//! Either way the deadline starts at the broker's ack, the result comes on the results topic,
//! or the attempt fails after `callback_timeout`.

pub mod attempt;
pub mod message;
mod partition;
mod producer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::CleanerName;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{Attempt, Cleaner, CleanerError, Outcome};
use crate::config::PartitionKey;
use crate::store::master_key::MasterKey;
use crate::store::RecordedEvent;
use crate::telemetry::metrics;
pub use message::{message_value, Message};
pub use partition::subject_key;
pub use producer::{producer, FromBrokers, RenewingProducer};

/// How long the broker has to acknowledge a message Lethe publishes for a cleaner.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One configured Kafka cleaner.
#[derive(Debug, Clone)]
pub struct KafkaCleaner {
    /// What attempts are published with; `None` when it could not be created (each attempt
    /// then waits for a later try).
    producer: Option<Arc<RenewingProducer>>,
    /// The topic of the Due event.
    topic: Option<String>,
    /// The cleaner's own topic, when it has one.
    own: Option<OwnTopic>,
    callback_timeout: Duration,
}

/// A Kafka cleaner's own topic and what its messages carry (`topic = ...` in lethe.toml).
#[derive(Debug, Clone)]
pub struct OwnTopic {
    pub topic: String,
    /// Where the cleaner answers (`[kafka] results_topic`), named in every message.
    pub results_topic: String,
    pub partition_key: PartitionKey,
    /// The identifier kinds the cleaner may see (`identifiers`); `None`: all of them.
    pub identifiers: Option<BTreeSet<String>>,
    /// Whether the cleaner is batched (`batch`): then every attempt is sent as a batch, of one
    /// request if need be, so that the cleaner reads one shape.
    pub batched: bool,
    /// The keys the partition keys of `partition_key = "subject"` are derived from.
    pub keys: Option<MasterKey>,
}

impl OwnTopic {
    /// The identifiers of `subject` the cleaner may see (the workflow narrows them already;
    /// narrowing again costs nothing and holds even if it did not).
    fn narrow(&self, subject: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        subject
            .iter()
            .filter(|(kind, _)| self.identifiers.as_ref().is_none_or(|w| w.contains(*kind)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The key of one attempt's message.
    fn key(
        &self,
        attempt: &Attempt<'_>,
        subject: &BTreeMap<String, String>,
    ) -> Result<String, CleanerError> {
        match self.partition_key {
            PartitionKey::Request => Ok(attempt.request.id.to_string()),
            PartitionKey::Subject => {
                let keys = self.keys.as_ref().ok_or_else(|| {
                    CleanerError::Unavailable(
                        "kafka: no master key to derive the subject's partition key from"
                            .to_owned(),
                    )
                })?;
                Ok(subject_key(&keys.newest(), subject))
            }
        }
    }
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
            own: None,
            callback_timeout,
        }
    }

    /// The cleaner with a topic of its own: every attempt is published there.
    #[must_use]
    pub fn with_own_topic(mut self, own: OwnTopic) -> Self {
        self.own = Some(own);
        self
    }

    /// When an attempt handed over now fails without a result.
    fn deadline(&self) -> DateTime<Utc> {
        Utc::now()
            + chrono::TimeDelta::from_std(self.callback_timeout).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Publishes `message` to `topic` and waits for the broker's ack; a failure renews the
    /// producer, and the attempt is made again later.
    async fn publish(&self, topic: &str, message: &Message) -> Result<(), CleanerError> {
        let Some(producer) = &self.producer else {
            return Err(CleanerError::Unavailable(
                "kafka: no producer to publish the attempt with".to_owned(),
            ));
        };
        if let Err(error) = send(&producer.current(), topic, message).await {
            // A producer broken by an outage stays broken: the next try gets a new one (see
            // `RenewingProducer`).
            producer.renew();
            return Err(CleanerError::Unavailable(error));
        }
        Ok(())
    }

    /// An attempt of a cleaner without a topic of its own: attempt 1 is the relay's Due, a
    /// retry is the Due again.
    async fn attempt_on_due(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        if attempt.attempt == 1 {
            return Ok(Outcome::Awaiting);
        }
        let Some(topic) = &self.topic else {
            return Err(CleanerError::Unavailable(
                "kafka: no Due topic to publish the retry on".to_owned(),
            ));
        };
        let due = attempt
            .due
            .ok_or_else(|| CleanerError::Corrupt("a cleaning request without Due".to_owned()))?;
        let started = Instant::now();
        let message = Message::retry(due, attempt.cleaner, attempt.attempt);
        self.publish(topic, &message).await?;
        metrics::cleaner_call(
            attempt.cleaner.as_str(),
            self.kind(),
            started.elapsed().as_secs_f64(),
        );
        // From the broker's ack of the retry (the publish above waited for it).
        Ok(Outcome::Accepted {
            deadline: self.deadline(),
        })
    }

    /// Attempts on the cleaner's own topic: one message for them all when the cleaner is
    /// batched, one each otherwise. An attempt whose subject cannot be read fails alone.
    async fn attempt_on_own_topic(
        &self,
        own: &OwnTopic,
        attempts: &[Attempt<'_>],
    ) -> Vec<Result<Outcome, CleanerError>> {
        let mut outcomes: Vec<Option<Result<Outcome, CleanerError>>> = vec![None; attempts.len()];
        let mut ready = Vec::new();
        for (i, attempt) in attempts.iter().enumerate() {
            match attempt.subject {
                Some(subject) => ready.push((i, attempt, own.narrow(subject))),
                None => {
                    outcomes[i] = Some(Ok(
                        attempt.failed("the subject's identifiers cannot be read")
                    ));
                }
            }
        }
        let answer = attempt::Answer {
            results_topic: &own.results_topic,
        };
        let started = Instant::now();
        let sent: Vec<(usize, Result<(), CleanerError>)> = match ready.first() {
            None => Vec::new(),
            Some((_, first, _)) if own.batched => {
                let parts: Vec<_> = ready.iter().map(|(_, a, s)| (*a, s)).collect();
                let message = attempt::batch(first.cleaner, &parts, answer);
                let result = self.publish(&own.topic, &message).await;
                ready.iter().map(|(i, _, _)| (*i, result.clone())).collect()
            }
            Some(_) => {
                let sends = ready.iter().map(|(i, attempt, subject)| async move {
                    let key = match own.key(attempt, subject) {
                        Ok(key) => key,
                        Err(error) => return (*i, Err(error)),
                    };
                    let message = attempt::single(attempt, subject, key, answer);
                    (*i, self.publish(&own.topic, &message).await)
                });
                futures::future::join_all(sends).await
            }
        };
        for (i, result) in sent {
            let attempt = &attempts[i];
            outcomes[i] = Some(result.map(|()| {
                metrics::cleaner_call(
                    attempt.cleaner.as_str(),
                    self.kind(),
                    started.elapsed().as_secs_f64(),
                );
                // From the broker's ack (the publish waited for it).
                Outcome::Accepted {
                    deadline: self.deadline(),
                }
            }));
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(CleanerError::Corrupt(
                        "an attempt left unanswered".to_owned(),
                    ))
                })
            })
            .collect()
    }
}

#[async_trait]
impl Cleaner for KafkaCleaner {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    /// Only a cleaner with a topic of its own is sent the identifiers.
    fn needs_subject(&self) -> bool {
        self.own.is_some()
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        match &self.own {
            None => self.attempt_on_due(attempt).await,
            Some(own) => self
                .attempt_on_own_topic(own, &[attempt])
                .await
                .pop()
                .unwrap_or_else(|| Err(CleanerError::Corrupt("no outcome".to_owned()))),
        }
    }

    /// With a topic of its own, one message for the batch; otherwise one attempt each.
    async fn attempt_batch(&self, attempts: &[Attempt<'_>]) -> Vec<Result<Outcome, CleanerError>> {
        match &self.own {
            Some(own) => self.attempt_on_own_topic(own, attempts).await,
            None => {
                futures::future::join_all(attempts.iter().map(|a| self.attempt_on_due(*a))).await
            }
        }
    }
}

/// Publishes one message and waits for the broker's ack.
async fn send(producer: &FutureProducer, topic: &str, message: &Message) -> Result<(), String> {
    let value = message.value.to_string();
    let record = FutureRecord::to(topic)
        .key(&message.key)
        .payload(&value)
        .headers(message.kafka_headers());
    producer
        .send(record, DELIVERY_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(error, _)| format!("kafka: {error}"))
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
    send(producer, topic, &Message::retry(due, cleaner, attempt)).await
}
