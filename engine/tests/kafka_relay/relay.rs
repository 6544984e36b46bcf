//! The relay: what it publishes, with the broker down and after its producer failed, and the
//! settings that turn it on.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_events_are_published_once_in_order_per_request() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let store = support::sqlite().await;
    let database = store.database();
    let config = config();
    let requests = Requests::new(database.events.clone(), Arc::new(config.clone()));
    let relay = KafkaRelay {
        producer: producer(&brokers).unwrap(),
        topics: config.kafka.clone().unwrap().publish,
        sink: Arc::new(CallbackJobs(database.workflow.clone())),
        kafka_cleaners: lethe_engine::kafka::kafka_cleaners(&config),
    };
    let meta = EventMetadata::new("test");
    let mut ids = Vec::new();
    for n in 0..6 {
        let id = submit(&requests, n).await;
        if n % 2 == 0 {
            // Due now with no cleaners: Due and Completed at once.
            requests
                .execute(id, &meta, |_| Command::MarkDue {
                    at: chrono::Utc::now(),
                    cleaners: vec![],
                    expedite: true,
                    reason: None,
                })
                .await
                .unwrap();
        } else {
            requests
                .execute(id, &meta, |_| Command::Cancel {
                    at: chrono::Utc::now(),
                    reason: None,
                })
                .await
                .unwrap();
        }
        ids.push(id);
    }
    // Only the configured types: 6 Received + 3 × (Due, Completed) + 3 Cancelled = 15.
    relay_all(&database, &relay).await;
    let messages = consume(&brokers, 15).await;
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for message in &messages {
        assert_eq!(message.value["request_id"], message.key);
        assert_eq!(
            message.headers["lethe-event-id"],
            message.value["event_id"].as_str().unwrap()
        );
        assert_eq!(
            message.headers["lethe-event-type"],
            message.value["type"].as_str().unwrap()
        );
        assert_eq!(message.headers["lethe-schema-version"], "1");
        assert!(message.headers.contains_key("lethe-correlation-id"));
        assert!(message.value["position"].is_i64() && message.value["recorded_at"].is_string());
        by_key
            .entry(message.key.clone())
            .or_default()
            .push(message.value["type"].as_str().unwrap().to_owned());
    }
    for (n, id) in ids.iter().enumerate() {
        let expected: &[&str] = if n % 2 == 0 {
            &["Received", "Due", "Completed"]
        } else {
            &["Received", "Cancelled"]
        };
        assert_eq!(by_key[&id.to_string()], expected, "request {n}");
    }
    let unique: std::collections::HashSet<_> = messages
        .iter()
        .map(|m| m.headers["lethe-event-id"].clone())
        .collect();
    assert_eq!(unique.len(), messages.len(), "each event published once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_nothing_moves_and_the_backlog_drains_after() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let store = support::sqlite().await;
    let database = store.database();
    let config = config();
    let requests = Requests::new(database.events.clone(), Arc::new(config.clone()));
    let relay = Arc::new(KafkaRelay {
        producer: producer(&brokers).unwrap(),
        topics: config.kafka.clone().unwrap().publish,
        sink: Arc::new(CallbackJobs(database.workflow.clone())),
        kafka_cleaners: lethe_engine::kafka::kafka_cleaners(&config),
    });
    submit(&requests, 0).await;
    relay_all(&database, &relay).await;
    let before = database
        .workflow
        .subscription_checkpoint(RELAY)
        .await
        .unwrap()
        .unwrap();

    cluster.broker_down(1).unwrap();
    for n in 1..4 {
        submit(&requests, n).await;
    }
    let round = {
        let database = database.clone();
        let relay = relay.clone();
        tokio::spawn(async move { runner(&database).round(&*relay).await })
    };
    // While the broker is down the round cannot finish, and the checkpoint stays put.
    let waited = tokio::time::timeout(Duration::from_millis(1500), async {
        while !round.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_err(),
        "the relay finished a round with the broker down"
    );
    assert_eq!(
        database
            .workflow
            .subscription_checkpoint(RELAY)
            .await
            .unwrap()
            .unwrap(),
        before
    );

    cluster.broker_up(1).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), round)
        .await
        .unwrap()
        .unwrap();
    // Delivered after all (librdkafka retried), or failed after its timeout: either way the
    // next rounds publish whatever is left.
    let _ = result;
    relay_all(&database, &relay).await;
    let messages = consume(&brokers, 4).await;
    let keys: std::collections::HashSet<_> = messages.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys.len(), 4, "every request's Received was delivered");
    assert!(
        database
            .workflow
            .subscription_checkpoint(RELAY)
            .await
            .unwrap()
            .unwrap()
            > before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_producer_failed_for_good_the_relay_publishes_through_a_new_one() {
    use rdkafka::producer::Producer;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let store = support::sqlite().await;
    let database = store.database();
    let config = config();
    let requests = Requests::new(database.events.clone(), Arc::new(config.clone()));
    let relay = KafkaRelay {
        producer: producer(&brokers).unwrap(),
        topics: config.kafka.clone().unwrap().publish,
        sink: Arc::new(CallbackJobs(database.workflow.clone())),
        kafka_cleaners: lethe_engine::kafka::kafka_cleaners(&config),
    };
    submit(&requests, 0).await;
    relay_all(&database, &relay).await;

    // A retried batch the broker then disowns (unknown producer id) is a fatal error for an
    // idempotent producer: librdkafka refuses every later message from it.
    let broken = relay.producer.current();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID,
        ],
    );
    submit(&requests, 1).await;
    let failed = runner(&database).round(&relay).await;
    assert!(failed.is_err(), "the round with the fatal error failed");
    assert!(
        broken.client().fatal_error().is_some(),
        "the old producer is broken for good"
    );
    assert!(relay.producer.current().client().fatal_error().is_none());

    // The next rounds publish the batch again through the new producer.
    submit(&requests, 2).await;
    relay_all(&database, &relay).await;
    let messages = consume(&brokers, 3).await;
    let keys: std::collections::HashSet<_> = messages.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys.len(), 3, "every request's Received was delivered");
}

#[tokio::test]
async fn without_a_kafka_section_there_is_no_relay() {
    assert!(Config::default().kafka.is_none());
    let config = Config::parse("[kafka]\nbrokers = \"127.0.0.1:9092\"\n").unwrap();
    let kafka = config.kafka.unwrap();
    assert_eq!(kafka.publish["Due"], "lethe.due");
    assert_eq!(kafka.publish["Completed"], "lethe.completed");
    assert_eq!(kafka.publish["Cancelled"], "lethe.cancelled");
    assert_eq!(kafka.results_topic, "lethe.cleaner-results");
}
/// `LETHE_KAFKA_BROKERS` with no `[kafka]` section: `lethe serve` publishes with the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lethe_kafka_brokers_alone_enables_kafka_with_the_defaults() {
    use std::process::Stdio;
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["lethe.due", "lethe.completed", "lethe.cancelled"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("lethe.db").display());
    let lethe = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lethe"));
        command
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("LETHE_MASTER_KEY_FILE", &key)
            .env("LETHE_DATABASE_URL", &database_url)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    };
    let run = |args: &'static [&'static str]| {
        let mut command = lethe(args);
        async move {
            let output = tokio::time::timeout(Duration::from_secs(60), command.output())
                .await
                .unwrap()
                .unwrap();
            assert!(output.status.success(), "{args:?}: {output:?}");
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let submitted: serde_json::Value =
        serde_json::from_str(&run(&["submit", "--subject", "user_id=7", "--json"]).await).unwrap();
    let id = submitted["id"].as_str().unwrap().to_owned();
    let mut cancel = lethe(&["cancel", &id]);
    cancel.stdout(Stdio::null());
    assert!(cancel.status().await.unwrap().success());

    let mut serve = lethe(&["serve", "--listen", "127.0.0.1:0"]);
    serve
        .env("LETHE_KAFKA_BROKERS", cluster.bootstrap_servers())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = serve.spawn().unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "env-enabled")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&["lethe.cancelled"]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("nothing was published to lethe.cancelled")
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(value["type"], "Cancelled");
    assert_eq!(value["request_id"], id.as_str());
    server.kill().await.unwrap();
}
