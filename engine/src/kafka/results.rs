//! The results consumer: a subscriber of the results topic that records each Kafka cleaner's
//! result through the application service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lethe_domain::{CleanerName, Command};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::Message as _;
use serde::Deserialize;
use tokio::sync::watch;

use super::{Error, RETRY_INTERVAL};
use crate::app::progress::Progress;
use crate::app::{RequestError, Requests};
use crate::cleaners::kafka::{producer, RenewingProducer};
use crate::config::KafkaConfig;
use crate::store::EventMetadata;

/// A result message on `results_topic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultMessage {
    pub request_id: lethe_domain::RequestId,
    pub cleaner: CleanerName,
    pub attempt: u32,
    /// `succeeded` or `failed`; absent on a progress report.
    pub outcome: Option<String>,
    /// How far the cleaner has come on an attempt whose result is awaited: a heartbeat that
    /// moves its deadline, instead of a result (ADR 36).
    pub progress: Option<ProgressMessage>,
    pub retryable: Option<bool>,
    pub detail: Option<String>,
    pub deleted: Option<BTreeMap<String, u64>>,
}

/// A progress report's counts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressMessage {
    pub done: u64,
    pub total: Option<u64>,
}

/// Consumes cleaners' results in a consumer group: appends `CleanerSucceeded` /
/// `CleanerFailed` and commits the offset only after the append. A result that cannot be
/// applied (bad JSON, unknown request or cleaner, an attempt never made) goes to the dead-letter
/// topic with the reason in the `lethe-reason` header; the consumer never stops on it.
pub async fn run_results_consumer(
    config: KafkaConfig,
    requests: Requests,
    mut shutdown: watch::Receiver<bool>,
) {
    let consumer = match results_consumer(&config.brokers) {
        Ok(consumer) => Arc::new(consumer),
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
        let done = take_result(&requests, &config, &dead_letters, &message).await;
        settle(&consumer, &message, done);
    }
}

/// The consumer of the results topic: in group `lethe-cleaner-results`, offsets committed by
/// hand, from the earliest when the group has none.
fn results_consumer(brokers: &str) -> Result<StreamConsumer, Error> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "lethe-cleaner-results")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()?)
}

/// Records one result, or sends it to the dead-letter topic; whether it is done with (its
/// offset may be committed).
async fn take_result(
    requests: &Requests,
    config: &KafkaConfig,
    dead_letters: &RenewingProducer,
    message: &BorrowedMessage<'_>,
) -> bool {
    let payload = message.payload().unwrap_or_default();
    match apply_result(requests, payload).await {
        Ok(()) => true,
        Err(Error::Rejected(reason)) => dead_letter(config, dead_letters, message, &reason).await,
        Err(error) => {
            // Not committed: the result is read again after a restart or rebalance.
            tracing::warn!(error = %error, "a cleaner result could not be recorded; retrying");
            tokio::time::sleep(RETRY_INTERVAL).await;
            false
        }
    }
}

/// Sends a result that cannot be applied to the dead-letter topic, with the reason in the
/// `lethe-reason` header; whether the topic took it.
async fn dead_letter(
    config: &KafkaConfig,
    dead_letters: &RenewingProducer,
    message: &BorrowedMessage<'_>,
    reason: &str,
) -> bool {
    let record = FutureRecord::to(&config.dead_letter_topic)
        .payload(message.payload().unwrap_or_default())
        .key(message.key().unwrap_or_default())
        .headers(OwnedHeaders::new().insert(Header {
            key: "lethe-reason",
            value: Some(reason),
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

/// Commits the offset of a result done with; rewinds to one that is not, to read it again.
fn settle(consumer: &StreamConsumer, message: &BorrowedMessage<'_>, done: bool) {
    if done {
        if let Err(error) = consumer.commit_message(message, CommitMode::Sync) {
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
/// `engine/tests/kafka_tansu/`).
async fn wait_for_topic(consumer: &Arc<StreamConsumer>, topic: &str) {
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

async fn find_topic(consumer: &Arc<StreamConsumer>, topic: &str) {
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

async fn apply_result(requests: &Requests, payload: &[u8]) -> Result<(), Error> {
    let result: ResultMessage = serde_json::from_slice(payload)
        .map_err(|e| Error::Rejected(format!("malformed result: {e}")))?;
    let is_kafka_cleaner = requests
        .config()
        .cleaner(&result.cleaner)
        .is_some_and(|c| c.kind.is_kafka());
    if !is_kafka_cleaner {
        return Err(Error::Rejected(format!(
            "{} is not a Kafka cleaner",
            result.cleaner
        )));
    }
    let succeeded = match (result.outcome.as_deref(), &result.progress) {
        (Some("succeeded"), None) => true,
        (Some("failed"), None) => false,
        (None, Some(progress)) => return apply_progress(requests, &result, progress).await,
        (Some(_), Some(_)) => {
            return Err(Error::Rejected(
                "a result has an outcome or progress, not both".to_owned(),
            ))
        }
        (None, None) => return Err(Error::Rejected("missing field `outcome`".to_owned())),
        (Some(other), None) => return Err(Error::Rejected(format!("unknown outcome {other:?}"))),
    };
    // A result is untrusted input bound for the immutable log: `execute_result` redacts the
    // subject's identifiers in its text and cuts it to what the HTTP result endpoint keeps.
    let detail = result.detail.clone();
    let metadata = EventMetadata::new(format!("cleaner:{}", result.cleaner));
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
    rejection(outcome.map(|_| ()))
}

/// A progress report: a heartbeat on the awaited attempt, no event.
async fn apply_progress(
    requests: &Requests,
    result: &ResultMessage,
    progress: &ProgressMessage,
) -> Result<(), Error> {
    let progress = Progress::new(progress.done, progress.total)
        .map_err(|error| Error::Rejected(format!("{} {error}", error.field())))?;
    let recorded = requests
        .record_progress(result.request_id, &result.cleaner, result.attempt, progress)
        .await;
    rejection(recorded.map(|_| ()))
}

/// What the consumer does with an outcome: a rejection goes to the dead-letter topic, a store
/// failure is tried again.
fn rejection(outcome: Result<(), RequestError>) -> Result<(), Error> {
    match outcome {
        Ok(()) => Ok(()),
        Err(RequestError::NotFound(id)) => Err(Error::Rejected(format!("unknown request {id}"))),
        Err(RequestError::Rejected(e)) => Err(Error::Rejected(e.to_string())),
        Err(RequestError::Invalid(e)) => Err(Error::Rejected(e.to_string())),
        Err(e @ RequestError::NotAwaited { .. }) => Err(Error::Rejected(e.to_string())),
        Err(e) => Err(Error::Store(e.to_string())),
    }
}
