//! Lethe's Kafka producer: idempotent, and renewed after a failure.

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

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
