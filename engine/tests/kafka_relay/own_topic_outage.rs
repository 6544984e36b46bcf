//! An own-topic Kafka cleaner's attempt 1 with the broker down, on an engine wired as `lethe
//! serve` (subjects sealed under the master key): the attempt is not handed over and uses
//! nothing up; once the broker is back, the message arrives with the identifiers opened and
//! narrowed, its deadline counts from the broker's ack, and the result completes the request.

use lethe_domain::RequestStatus;
use lethe_engine::workflow::JobKind;

use super::support::config::{Cleaner, TestConfig};
use super::support::engine::{eventually, TestEngine};
use super::*;

const TOPIC: &str = "lethe.erase.search";

async fn an_attempt_the_broker_did_not_take_is_made_again_once_it_is_back(
    store: support::TestStore,
) {
    let cluster = MockCluster::new(1).unwrap();
    for topic in [
        "lethe.due",
        "lethe.cleaner-results",
        "lethe.dead-letter",
        TOPIC,
    ] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let search = Cleaner::kafka("search")
        .callback_timeout("1h")
        .extra("topic = \"lethe.erase.search\"\nidentifiers = [\"email\"]");
    let config = TestConfig::new()
        .poll_interval("50ms")
        .lease("2s")
        .kafka(&brokers)
        .publish(&["Due"], "lethe.due")
        .cleaner(search);
    let engine = TestEngine::spawn(&store, config).await;
    cluster.broker_down(1).unwrap();
    let id = engine
        .submit_due(&[("email", "ada@example.com"), ("user_id", "u-ada")])
        .await;
    // The job for all the request's cleaners tried, the broker did not take the message, and
    // the attempt became the cleaner's own job, to be made again after the lease.
    eventually(
        Duration::from_secs(60),
        "the attempt failed to be handed over",
        || async {
            let jobs = engine.jobs(id).await;
            jobs.iter()
                .any(|j| j.kind == JobKind::Dispatch && j.key == "search")
                .then_some(())
        },
    )
    .await;
    let callbacks = |jobs: Vec<lethe_engine::workflow::Job>| {
        jobs.into_iter()
            .filter(|j| j.kind == JobKind::Callback)
            .collect::<Vec<_>>()
    };
    assert_eq!(callbacks(engine.jobs(id).await), []);
    let loaded = engine.load(id).await;
    assert!(loaded
        .events
        .iter()
        .all(|e| e.event_type != "CleanerFailed"));

    let up = chrono::Utc::now();
    cluster.broker_up(1).unwrap();
    let callback = eventually(
        Duration::from_secs(60),
        "the attempt was handed over",
        || async { callbacks(engine.jobs(id).await).pop() },
    )
    .await;
    assert_eq!((callback.key.as_str(), callback.attempt), ("search", 1));
    assert!(callback.run_at >= up + chrono::TimeDelta::hours(1));

    let (key, value) = first_message(&brokers).await;
    assert_eq!(value["request_id"], id.to_string());
    assert_eq!(value["attempt"], 1);
    assert_eq!(
        value["subject"],
        serde_json::json!({"email": "ada@example.com"})
    );
    assert_eq!(key, id.to_string());

    answer_succeeded(&brokers, id).await;
    engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(30))
        .await;
    engine.stop().await;
}

/// The first message on the cleaner's topic: its key and value.
async fn first_message(brokers: &str) -> (String, serde_json::Value) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "search-service")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("no message on the cleaner's topic")
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    let key = String::from_utf8_lossy(message.key().unwrap()).into_owned();
    (key, value)
}

/// The cleaner's answer: attempt 1 succeeded.
async fn answer_succeeded(brokers: &str, id: RequestId) {
    let result = serde_json::json!({
        "request_id": id, "cleaner": "search", "attempt": 1, "outcome": "succeeded",
    })
    .to_string();
    let key = id.to_string();
    producer::<FutureProducer>(brokers)
        .unwrap()
        .send(
            rdkafka::producer::FutureRecord::to("lethe.cleaner-results")
                .key(&key)
                .payload(&result),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

support::backends!(an_attempt_the_broker_did_not_take_is_made_again_once_it_is_back);
