//! Kafka: the relay that publishes chosen events of the log to topics.
//!
//! The relay is a checkpointed subscription like any other, so the log *is* the outbox: there
//! is no dual write. It publishes each batch with an idempotent producer (`acks=all`,
//! `enable.idempotence=true`), key = request id, and moves its checkpoint only after the broker
//! acknowledged every message of the batch. If the broker is down, nothing moves: the backlog
//! is published in order once it is back (at least once: consumers dedupe on `lethe-event-id`).
//! After a failed batch the relay publishes through a new producer (see [`RenewingProducer`]),
//! because an idempotent producer can stay broken after an outage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

use chrono::Utc;
use lethe_domain::{CleanerName, Event};

use crate::config::KafkaConfig;
use crate::store::{Checkpoint, RecordedEvent, StoreError};
use crate::subscriptions::Projector;
use crate::workflow::WorkflowStore;
use crate::workflow::{micros, Job, JobChange, JobKind};

pub mod message;

pub use message::{message_value, Message};

/// The subscription name of the relay.
pub const RELAY: &str = "kafka-relay";

/// Lethe's idempotent producer (`enable.idempotence=true`, `acks=all`, 10 s delivery timeout),
/// as whichever type the caller needs: a plain [`FutureProducer`], or a [`RenewingProducer`]
/// (what [`KafkaRelay`] holds).
pub fn producer<P: FromBrokers>(brokers: &str) -> Result<P, KafkaError> {
    P::from_brokers(brokers)
}

/// A producer that [`producer`] can build.
pub trait FromBrokers: Sized {
    fn from_brokers(brokers: &str) -> Result<Self, KafkaError>;
}

impl FromBrokers for FutureProducer {
    fn from_brokers(brokers: &str) -> Result<Self, KafkaError> {
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "5")
            .create()
    }
}

/// An idempotent producer that is swapped for a new one after a failure.
///
/// librdkafka's idempotent producer can stay broken after an outage, with no way back short of
/// a new producer: after a fatal idempotence error, and when the broker has forgotten the
/// producer id (a broker that lost its state, such as tansu with memory storage after a
/// restart) librdkafka bumps the epoch on its own, which such a broker refuses, so every
/// message times out. A new producer asks the broker for a new producer id.
pub struct RenewingProducer {
    brokers: String,
    current: std::sync::Mutex<FutureProducer>,
}

impl std::fmt::Debug for RenewingProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewingProducer")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl FromBrokers for RenewingProducer {
    fn from_brokers(brokers: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            brokers: brokers.to_owned(),
            current: std::sync::Mutex::new(FutureProducer::from_brokers(brokers)?),
        })
    }
}

impl RenewingProducer {
    /// The producer to publish with now.
    pub fn current(&self) -> FutureProducer {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the producer with a new one. Call it only once nothing sent through the current
    /// one is outstanding, or an old message could reach the broker after a newer one.
    pub fn renew(&self) {
        let fresh = match FutureProducer::from_brokers(&self.brokers) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(error = %error, "cannot create a new Kafka producer; keeping the old one");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *self
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            fresh,
        );
        // Dropping a producer flushes and joins its threads: not on an async worker.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(old))),
            Err(_) => drop(old),
        }
    }
}

/// Publishes the configured event types; see the module docs.
pub struct KafkaRelay {
    pub producer: RenewingProducer,
    pub topics: BTreeMap<String, String>,
    pub workflow: Arc<dyn WorkflowStore>,
    /// The `callback_timeout` of each Kafka cleaner ([`kafka_cleaners`]): attempt 1 of such a
    /// cleaner is the Due message, and its deadline starts when the broker acknowledges it.
    pub kafka_cleaners: BTreeMap<CleanerName, Duration>,
}

/// The Kafka cleaners of `config` and their `callback_timeout`, for [`KafkaRelay`].
pub fn kafka_cleaners(config: &crate::config::Config) -> BTreeMap<CleanerName, Duration> {
    config
        .cleaners
        .iter()
        .filter(|c| c.kind.is_kafka())
        .map(|c| (c.name.clone(), c.callback_timeout.0))
        .collect()
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
        let producer = self.producer.current();
        let mut deliveries = Vec::new();
        let mut failure = None;
        let sent_at = std::time::Instant::now();
        for event in events {
            let Some(topic) = self.topics.get(&event.event_type) else {
                continue;
            };
            let waiting = self.kafka_cleaners_due(event)?;
            let message = Message::event(event);
            let value = message.value.to_string();
            let record = FutureRecord::to(topic)
                .key(&message.key)
                .payload(&value)
                .headers(message.kafka_headers());
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push((delivery, event.stream_id, waiting)),
                Err((error, _)) => {
                    failure = Some(error.to_string());
                    break;
                }
            }
        }
        // Every delivery is awaited, failed or not, so that nothing of this batch is left in
        // the producer when it is replaced.
        let mut deadlines = Vec::new();
        for (delivery, request_id, waiting) in deliveries {
            let error = match delivery.await {
                Ok(Ok(_)) => {
                    // Acknowledged (no later than now): the Kafka cleaners it names have had
                    // their attempt 1 handed over, and their `callback_timeout` starts.
                    let acked = Utc::now();
                    for (cleaner, timeout) in waiting {
                        crate::telemetry::metrics::cleaner_call(
                            cleaner.as_str(),
                            "kafka",
                            sent_at.elapsed().as_secs_f64(),
                        );
                        deadlines.push(JobChange::Upsert(Job {
                            request_id,
                            kind: JobKind::Callback,
                            key: cleaner.to_string(),
                            run_at: acked + micros(timeout),
                            attempt: 1,
                        }));
                    }
                    continue;
                }
                Ok(Err((error, _))) => error.to_string(),
                Err(_) => "delivery cancelled".to_owned(),
            };
            failure.get_or_insert(error);
        }
        if let Some(error) = failure {
            // The next round publishes the whole batch again, through a new producer.
            self.producer.renew();
            return Err(StoreError::Downstream(format!("kafka: {error}")));
        }
        // Every message is acknowledged: only now may the checkpoint move, and the deadlines
        // start, in the same transaction (a batch published again sets them again).
        self.workflow
            .commit_subscription(RELAY, owner, checkpoint, &deadlines)
            .await
    }
}

impl KafkaRelay {
    /// The Kafka cleaners a Due event plans, with their `callback_timeout`; none for any other
    /// event.
    fn kafka_cleaners_due(
        &self,
        event: &RecordedEvent,
    ) -> Result<Vec<(CleanerName, Duration)>, StoreError> {
        if event.event_type != "Due" || self.kafka_cleaners.is_empty() {
            return Ok(Vec::new());
        }
        let Event::Due(due) = event.event()? else {
            return Ok(Vec::new());
        };
        Ok(due
            .cleaners
            .into_iter()
            .filter_map(|planned| {
                let timeout = *self.kafka_cleaners.get(&planned.name)?;
                Some((planned.name, timeout))
            })
            .collect())
    }
}

/// How long the relay waits between rounds when the broker fails.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

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

/// A result message on `results_topic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultMessage {
    pub request_id: lethe_domain::RequestId,
    pub cleaner: CleanerName,
    pub attempt: u32,
    pub outcome: String,
    pub retryable: Option<bool>,
    pub detail: Option<String>,
    pub deleted: Option<BTreeMap<String, u64>>,
}

/// Consumes cleaners' results in a consumer group: appends `CleanerSucceeded` /
/// `CleanerFailed` and commits the offset only after the append. A result that cannot be
/// applied (bad JSON, unknown request or cleaner, an attempt never made) goes to the dead-letter
/// topic with the reason in the `lethe-reason` header; the consumer never stops on it.
pub async fn run_results_consumer(
    config: KafkaConfig,
    requests: crate::app::Requests,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::Message;

    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", "lethe-cleaner-results")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
    {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::error!(error = %error, "cannot create the Kafka results consumer");
            return;
        }
    };
    let dead_letters: RenewingProducer = match producer(&config.brokers) {
        Ok(producer) => producer,
        Err(error) => {
            tracing::error!(error = %error, "cannot create the dead-letter producer");
            return;
        }
    };
    let consumer = Arc::new(consumer);
    let topic = config.results_topic.as_str();
    loop {
        if consumer.subscription().map_or(0, |s| s.count()) == 0 {
            // Not in the group: at start, or after every broker connection was lost. Join once
            // the results topic can be seen; see [`wait_for_topic`].
            tokio::select! {
                () = wait_for_topic(&consumer, topic) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(error) = consumer.subscribe(&[topic]) {
                tracing::warn!(error = %error, "cannot subscribe to the results topic");
                tokio::time::sleep(RETRY_INTERVAL).await;
                continue;
            }
        }
        let message = tokio::select! {
            message = consumer.recv() => message,
            _ = shutdown.changed() => return,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %error, "reading cleaner results failed");
                if error.rdkafka_error_code()
                    == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
                {
                    consumer.unsubscribe();
                } else {
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
                continue;
            }
        };
        let payload = message.payload().unwrap_or_default();
        let outcome = apply_result(&requests, payload).await;
        let done = match outcome {
            Ok(()) => true,
            Err(ResultError::Store(error)) => {
                // Not committed: the result is read again after a restart or rebalance.
                tracing::warn!(error = %error, "a cleaner result could not be recorded; retrying");
                tokio::time::sleep(RETRY_INTERVAL).await;
                false
            }
            Err(ResultError::Rejected(reason)) => {
                let record = FutureRecord::to(&config.dead_letter_topic)
                    .payload(payload)
                    .key(message.key().unwrap_or_default())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "lethe-reason",
                        value: Some(&reason),
                    }));
                match dead_letters
                    .current()
                    .send(record, Duration::from_secs(10))
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(reason = %reason, "a cleaner result went to the dead-letter topic");
                        true
                    }
                    Err((error, _)) => {
                        tracing::warn!(error = %error, "the dead-letter topic refused a result; retrying");
                        // That one message was the producer's only one: nothing is outstanding.
                        dead_letters.renew();
                        tokio::time::sleep(RETRY_INTERVAL).await;
                        false
                    }
                }
            }
        };
        if done {
            if let Err(error) = consumer.commit_message(&message, CommitMode::Sync) {
                tracing::warn!(error = %error, "committing a results offset failed");
            }
        } else if let Err(error) = consumer.seek(
            message.topic(),
            message.partition(),
            rdkafka::Offset::Offset(message.offset()),
            Duration::from_secs(5),
        ) {
            tracing::warn!(error = %error, "could not rewind to a failed result");
        }
    }
}

/// Returns once `topic` exists with partitions, asking the brokers every [`RETRY_INTERVAL`].
///
/// The results consumer is out of its group until then: at start, and after every broker
/// connection was lost. Joining once the topic can be seen resumes as after a rebalance: from
/// the group's committed offsets, which against a broker that kept everything are where the
/// consumer was (each is committed right after its result is recorded), or from the earliest
/// when the broker has none. A consumer that stayed in the group through the outage would go on
/// fetching the partitions it had, from a broker that may have come back without them: tansu
/// with memory storage forgets its topics on a restart, and librdkafka 2.12 can crash on
/// tansu's answer to a fetch for a topic id it no longer knows (seen in the end-to-end test,
/// `engine/tests/kafka_tansu.rs`).
async fn wait_for_topic(consumer: &Arc<rdkafka::consumer::StreamConsumer>, topic: &str) {
    // The errors librdkafka reports meanwhile (the broker is still down) are read and dropped
    // here, or they would be taken for a new outage once back in the group.
    let drain = async {
        loop {
            let _ = consumer.recv().await;
        }
    };
    tokio::select! {
        () = find_topic(consumer, topic) => {}
        () = drain => {}
    }
}

async fn find_topic(consumer: &Arc<rdkafka::consumer::StreamConsumer>, topic: &str) {
    use rdkafka::consumer::Consumer;
    let mut logged = false;
    loop {
        let probe = consumer.clone();
        let name = topic.to_owned();
        // Fetching metadata blocks.
        let found = tokio::task::spawn_blocking(move || {
            probe
                .fetch_metadata(Some(&name), Duration::from_secs(5))
                .is_ok_and(|metadata| {
                    metadata.topics().iter().any(|t| {
                        t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        })
        .await
        .unwrap_or(false);
        if found {
            return;
        }
        if !std::mem::replace(&mut logged, true) {
            tracing::warn!(topic, "waiting for the Kafka results topic");
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

/// The most of a result's `detail` recorded, in characters (as by the HTTP result endpoint).
pub use crate::cleaners::redact::MAX_DETAIL_CHARS;

enum ResultError {
    Rejected(String),
    Store(String),
}

async fn apply_result(requests: &crate::app::Requests, payload: &[u8]) -> Result<(), ResultError> {
    use crate::app::RequestError;
    use lethe_domain::Command;
    let result: ResultMessage = serde_json::from_slice(payload)
        .map_err(|e| ResultError::Rejected(format!("malformed result: {e}")))?;
    let succeeded = match result.outcome.as_str() {
        "succeeded" => true,
        "failed" => false,
        other => return Err(ResultError::Rejected(format!("unknown outcome {other:?}"))),
    };
    let is_kafka_cleaner = requests
        .config()
        .cleaner(&result.cleaner)
        .is_some_and(|c| c.kind.is_kafka());
    if !is_kafka_cleaner {
        return Err(ResultError::Rejected(format!(
            "{} is not a Kafka cleaner",
            result.cleaner
        )));
    }
    // A result is untrusted input bound for the immutable log: `execute_result` redacts the
    // subject's identifiers in its text and cuts it to what the HTTP result endpoint keeps.
    let detail = result.detail.clone();
    let metadata = crate::store::EventMetadata::new(format!("cleaner:{}", result.cleaner));
    let now = Utc::now();
    let outcome = requests
        .execute_result(result.request_id, &metadata, |_| {
            if succeeded {
                Command::RecordCleanerSuccess {
                    cleaner: result.cleaner.clone(),
                    attempt: result.attempt,
                    at: now,
                    deleted: result.deleted.clone(),
                    detail: detail.clone(),
                }
            } else {
                Command::RecordCleanerFailure {
                    cleaner: result.cleaner.clone(),
                    attempt: result.attempt,
                    at: now,
                    error: detail
                        .clone()
                        .unwrap_or_else(|| "the cleaner reported a failure".to_owned()),
                    status_code: None,
                    retryable: result.retryable.unwrap_or(true),
                    retry_after_seconds: None,
                }
            }
        })
        .await;
    match outcome {
        Ok(_) => Ok(()),
        Err(RequestError::NotFound(id)) => {
            Err(ResultError::Rejected(format!("unknown request {id}")))
        }
        Err(RequestError::Rejected(e)) => Err(ResultError::Rejected(e.to_string())),
        Err(RequestError::Invalid(e)) => Err(ResultError::Rejected(e.to_string())),
        Err(e @ (RequestError::Store(_) | RequestError::Contended)) => {
            Err(ResultError::Store(e.to_string()))
        }
    }
}
