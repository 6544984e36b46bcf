//! A cleaner that takes its work from Kafka, as a service owner would write one (see
//! docs/KAFKA.md): it reads Due messages in its own consumer group, answers each one that is
//! for it on the results topic with the attempt it names, and commits the message only once
//! the answer is acknowledged. It rides out a broker that dies and comes back empty: it leaves
//! its group while no broker answers and joins again once the topic is back (librdkafka can
//! crash on a restarted broker's answer to a fetch for topics it no longer knows), and keeps
//! trying to send an answer the broker did not acknowledge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tokio::task::JoinHandle;

/// One Due message the cleaner acted on.
#[derive(Debug, Clone)]
pub struct Handled {
    pub request_id: String,
    pub attempt: u64,
}

#[derive(Debug)]
pub struct KafkaCleaner {
    handled: Arc<Mutex<Vec<Handled>>>,
    task: JoinHandle<()>,
}

impl KafkaCleaner {
    /// Starts cleaner `name` reading `due_topic` and answering on `results_topic`.
    pub fn start(brokers: &str, name: &'static str, due_topic: &str, results_topic: &str) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("{name}-service"))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[due_topic]).unwrap();
        let results: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("message.timeout.ms", "3000")
            .create()
            .unwrap();
        let consumer = Arc::new(consumer);
        let handled = Arc::new(Mutex::new(Vec::new()));
        let log = handled.clone();
        let (due_topic, results_topic) = (due_topic.to_owned(), results_topic.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let message = match consumer.recv().await {
                    Ok(message) => message,
                    Err(error) => {
                        rejoin_after_outage(&consumer, &due_topic, &error).await;
                        continue;
                    }
                };
                let Ok(due) = serde_json::from_slice::<serde_json::Value>(
                    message.payload().unwrap_or_default(),
                ) else {
                    continue;
                };
                // A retry names its cleaner; the first Due lists every planned one.
                let for_me = match due.get("cleaner") {
                    Some(cleaner) => cleaner == name,
                    None => due["data"]["cleaners"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["name"] == name)),
                };
                if !for_me {
                    continue;
                }
                let attempt = due
                    .get("attempt")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(1);
                let request_id = due["request_id"].as_str().unwrap_or_default().to_owned();
                log.lock().unwrap().push(Handled {
                    request_id: request_id.clone(),
                    attempt,
                });
                let result = serde_json::json!({
                    "request_id": request_id,
                    "cleaner": name,
                    "attempt": attempt,
                    "outcome": "succeeded",
                    "deleted": {"documents": 1},
                })
                .to_string();
                // Until acknowledged (the test's deadlines bound the wait).
                while results
                    .send(
                        FutureRecord::to(&results_topic)
                            .key(&request_id)
                            .payload(&result),
                        Duration::from_secs(5),
                    )
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = consumer.commit_message(&message, CommitMode::Async);
            }
        });
        Self { handled, task }
    }

    pub fn handled(&self) -> Vec<Handled> {
        self.handled.lock().unwrap().clone()
    }
}

impl Drop for KafkaCleaner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// After every broker connection was lost: leaves the group, and joins it again once the topic
/// can be seen. Other errors are transient: librdkafka reconnects by itself.
async fn rejoin_after_outage(consumer: &Arc<StreamConsumer>, topic: &str, error: &KafkaError) {
    if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
        return;
    }
    consumer.unsubscribe();
    let visible = async {
        loop {
            let probe = consumer.clone();
            let wanted = topic.to_owned();
            let found = tokio::task::spawn_blocking(move || {
                probe
                    .fetch_metadata(None, Duration::from_secs(5))
                    .is_ok_and(|metadata| {
                        metadata.topics().iter().any(|t| {
                            t.name() == wanted && t.error().is_none() && !t.partitions().is_empty()
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
    consumer.subscribe(&[topic]).unwrap();
}
