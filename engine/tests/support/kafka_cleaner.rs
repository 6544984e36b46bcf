//! A cleaner that takes its work from Kafka, as a service owner would write one (see
//! docs/KAFKA.md): it reads Due messages in its own consumer group, answers each one that is
//! for it on the results topic with the attempt it names, and commits the message only once
//! the answer is acknowledged.
//!
//! It is stopped ([`KafkaCleaner::stop`]) before the broker is killed and started again once
//! the broker is back. A consumer that stays assigned while tansu (memory storage) dies and
//! comes back empty fetches topic ids the broker no longer knows, and librdkafka 2.12 crashes
//! on the answer (a NULL topic name in its metadata cache, seen here and in
//! `engine/tests/kafka_tansu/`): no service could run like that, and the test is about
//! Lethe, not about riding out that crash.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::task::JoinHandle;

/// How long [`KafkaCleaner::stop`] may take.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// One Due message the cleaner acted on.
#[derive(Debug, Clone)]
pub struct Handled {
    pub request_id: String,
    pub attempt: u64,
}

#[derive(Debug)]
pub struct KafkaCleaner {
    name: &'static str,
    brokers: String,
    due_topic: String,
    results_topic: String,
    handled: Arc<Mutex<Vec<Handled>>>,
    stopping: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl KafkaCleaner {
    /// Starts cleaner `name` reading `due_topic` and answering on `results_topic`.
    pub fn start(brokers: &str, name: &'static str, due_topic: &str, results_topic: &str) -> Self {
        let mut cleaner = Self {
            name,
            brokers: brokers.to_owned(),
            due_topic: due_topic.to_owned(),
            results_topic: results_topic.to_owned(),
            handled: Arc::new(Mutex::new(Vec::new())),
            stopping: Arc::new(AtomicBool::new(false)),
            task: None,
        };
        cleaner.resume();
        cleaner
    }

    /// Lets the message in hand be answered, then leaves the group and stops reading.
    pub async fn stop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        tokio::time::timeout(STOP_DEADLINE, task)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within {STOP_DEADLINE:?}", self.name))
            .unwrap();
    }

    /// Starts reading again (a new consumer in the same group, a new producer).
    pub fn resume(&mut self) {
        assert!(self.task.is_none(), "{} is running", self.name);
        self.stopping.store(false, Ordering::SeqCst);
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}-service", self.name))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[&self.due_topic]).unwrap();
        let results: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("acks", "all")
            .set("message.timeout.ms", "3000")
            .create()
            .unwrap();
        let (name, results_topic) = (self.name, self.results_topic.clone());
        let (log, stopping) = (self.handled.clone(), self.stopping.clone());
        self.task = Some(tokio::spawn(async move {
            while !stopping.load(Ordering::SeqCst) {
                let message =
                    match tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
                        Ok(Ok(message)) => message,
                        // Transient errors: librdkafka reconnects by itself.
                        Ok(Err(_)) | Err(_) => continue,
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
                // Until acknowledged, or for a while (then Lethe's callback timeout makes the
                // attempt again).
                let deadline = Instant::now() + Duration::from_secs(10);
                while results
                    .send(
                        FutureRecord::to(&results_topic)
                            .key(&request_id)
                            .payload(&result),
                        Duration::from_secs(3),
                    )
                    .await
                    .is_err()
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = consumer.commit_message(&message, CommitMode::Async);
            }
            consumer.unsubscribe();
        }));
    }

    pub fn handled(&self) -> Vec<Handled> {
        self.handled.lock().unwrap().clone()
    }
}

impl Drop for KafkaCleaner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
