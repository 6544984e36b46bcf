//! Kafka: the relay that publishes chosen events of the log to topics (`relay`), and the
//! consumer that records the Kafka cleaners' results (`results`). The producer and the message
//! format belong to the Kafka cleaners (`cleaners::kafka`), which publish retries too.
//!
//! The relay is a checkpointed subscription like any other, so the log *is* the outbox: there
//! is no dual write. It publishes each batch with an idempotent producer (`acks=all`,
//! `enable.idempotence=true`), key = request id, and moves its checkpoint only after the broker
//! acknowledged every message of the batch. If the broker is down, nothing moves: the backlog
//! is published in order once it is back (at least once: consumers dedupe on `lethe-event-id`).
//! After a failed batch the relay publishes through a new producer (see [`RenewingProducer`]),
//! because an idempotent producer can stay broken after an outage.

mod relay;
mod results;

pub use crate::cleaners::kafka::{
    message, message_value, producer, publish_retry, FromBrokers, Message, RenewingProducer,
};
/// The most of a result's `detail` recorded, in characters (as by the HTTP result endpoint).
pub use crate::cleaners::redact::MAX_DETAIL_CHARS;
pub use relay::{kafka_cleaners, KafkaRelay, RELAY, RETRY_INTERVAL};
pub use results::{run_results_consumer, ResultMessage};

/// What goes wrong in the Kafka layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A result that cannot be applied: it goes to the dead-letter topic with this reason.
    #[error("{0}")]
    Rejected(String),
    /// A result could not be recorded now (the database): it is read again.
    #[error("{0}")]
    Store(String),
    /// The broker, or a client of it that cannot be created.
    #[error("kafka: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
}
