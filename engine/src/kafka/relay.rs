//! The relay: a subscription that publishes chosen events of the log to topics; see the
//! module docs of `kafka`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lethe_domain::{CleanerName, Event};
use rdkafka::producer::FutureRecord;

use crate::cleaners::kafka::{Message, RenewingProducer};
use crate::cleaners::AwaitedResult;
use crate::config::{CleanerKind, Config};
use crate::store::{Checkpoint, RecordedEvent, StoreError};
use crate::subscriptions::{Projector, Sink};

/// The subscription name of the relay.
pub const RELAY: &str = "kafka-relay";

/// How long the relay waits between rounds when the broker fails.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes the configured event types; see the module docs.
pub struct KafkaRelay {
    pub producer: RenewingProducer,
    pub topics: BTreeMap<String, String>,
    /// Where each batch's checkpoint goes, with the results its acknowledged Due messages
    /// now await (each Kafka cleaner's attempt 1), in one transaction. The composition root
    /// gives it the workflow's callback jobs.
    pub sink: Arc<dyn Sink<AwaitedResult>>,
    /// The `callback_timeout` of each Kafka cleaner ([`kafka_cleaners`]): attempt 1 of such a
    /// cleaner is the Due message, and its deadline starts when the broker acknowledges it.
    pub kafka_cleaners: BTreeMap<CleanerName, Duration>,
}

/// The Kafka cleaners of `config` whose attempt 1 is the relay's Due (those without a topic of
/// their own), and their `callback_timeout`, for [`KafkaRelay`]. A cleaner with a topic of its
/// own is sent every attempt by the dispatch worker: the Due does not count for it.
pub fn kafka_cleaners(config: &Config) -> BTreeMap<CleanerName, Duration> {
    config
        .cleaners
        .iter()
        .filter(|c| matches!(&c.kind, CleanerKind::Kafka(k) if k.topic.is_none()))
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
                        deadlines.push(AwaitedResult {
                            request_id,
                            cleaner,
                            attempt: 1,
                            deadline: acked
                                + chrono::TimeDelta::from_std(timeout)
                                    .unwrap_or(chrono::TimeDelta::MAX),
                        });
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
        self.sink.commit(RELAY, owner, checkpoint, &deadlines).await
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
