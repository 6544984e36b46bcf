//! A Kafka cleaner completes requests across a broker restart; poison is dead-lettered.

use super::support::config::{Cleaner, TestConfig};
use super::support::engine::TestEngine;
use super::*;

/// A service that erases on Kafka, as a service owner would write it: it reads Due messages in
/// its consumer group, and for each request that plans the `search` cleaner answers on the
/// results topic with the attempt it was given. It rides out broker outages like the observer
/// does, and retries a result it could not send. Returns the request ids it answered for.
fn start_search_service(brokers: String) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<String>>>) {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let log = answered.clone();
    let task = tokio::spawn(async move {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "search-service")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[DUE]).unwrap();
        let results: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("acks", "all")
            .set("message.timeout.ms", "5000")
            .create()
            .unwrap();
        let consumer = Arc::new(consumer);
        loop {
            let message = match consumer.recv().await {
                Ok(message) => message,
                Err(error) => {
                    rejoin_after_outage(&consumer, &[DUE.to_owned()], &error).await;
                    continue;
                }
            };
            let due: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
            let planned = due["data"]["cleaners"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == "search"));
            if !planned {
                continue;
            }
            let attempt = due
                .get("attempt")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1);
            let key = due["request_id"].as_str().unwrap().to_owned();
            let result = serde_json::json!({
                "request_id": key,
                "cleaner": "search",
                "attempt": attempt,
                "outcome": "succeeded",
                "deleted": {"documents": 2},
            })
            .to_string();
            while let Err((error, _)) = results
                .send(
                    FutureRecord::to(RESULTS).key(&key).payload(&result),
                    Duration::from_secs(10),
                )
                .await
            {
                eprintln!("search service: sending a result failed, retrying: {error}");
            }
            log.lock().unwrap().push(key);
            // Committed only once answered (a failed commit means the Due is read again).
            let _ = consumer.commit_message(&message, rdkafka::consumer::CommitMode::Async);
        }
    });
    (task, answered)
}

async fn wait_completed(requests: &Requests, ids: &[RequestId], limit: Duration) {
    let deadline = Instant::now() + limit;
    for id in ids {
        loop {
            let loaded = requests.load(*id).await.unwrap().unwrap();
            if loaded.request.status() == RequestStatus::Completed {
                let success = loaded
                    .events
                    .iter()
                    .find(|e| e.event_type == "CleanerSucceeded")
                    .expect("completed by the cleaner's result");
                assert_eq!(success.actor, "cleaner:search");
                assert_eq!(success.payload["attempt"], 1);
                assert_eq!(success.payload["deleted"]["documents"], 2);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not complete within {limit:?}: {:?}",
                loaded.request.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn submit_plain(requests: &Requests, n: usize) -> RequestId {
    requests
        .submit(
            Submission {
                subject: BTreeMap::from([("user_id".to_owned(), format!("c{n}"))]),
                ..Submission::default()
            },
            None,
            "test",
        )
        .await
        .unwrap()
        .loaded
        .request
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_cleaner_completes_requests_across_a_broker_restart_and_poison_is_dead_lettered() {
    show_logs();
    let started = Instant::now();
    let mut broker = Tansu::start().await;
    // One partition each, and fewer requests after the restart than before: the consumers'
    // old positions then lie beyond the end of the new, empty log.
    broker.create_topics(&CLEANER_TOPICS, 1).await;
    let brokers = broker.brokers();
    let store = support::postgres().await;
    // A callback timeout longer than the test: every result must come from the service, for
    // attempt 1, through the broker.
    let config = TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .kafka(&brokers)
        .cleaner(Cleaner::kafka("search").callback_timeout("10m"));
    let engine = TestEngine::spawn(&store, config).await;
    let requests = &engine.requests;
    let (service, answered) = start_search_service(brokers.clone());

    let mut first = Vec::new();
    for n in 0..6 {
        first.push(submit_plain(requests, n).await);
    }
    wait_completed(requests, &first, Duration::from_secs(90)).await;
    eprintln!(
        "{} requests completed through tansu in {:?}",
        first.len(),
        started.elapsed()
    );

    // The broker dies with nothing in flight; new requests become due while it is down.
    broker.stop();
    let mut second = Vec::new();
    for n in 6..9 {
        second.push(submit_plain(requests, n).await);
    }
    wait_due(requests, &second).await;
    assert!(
        answered
            .lock()
            .unwrap()
            .iter()
            .all(|k| !second.iter().any(|id| id.to_string() == *k)),
        "the service answered for a request while the broker was down"
    );

    // Back, empty: Lethe's relay and results consumer, which nobody restarts, carry on.
    broker.restart().await;
    broker.create_topics(&CLEANER_TOPICS, 1).await;
    let back = Instant::now();
    wait_completed(requests, &second, Duration::from_secs(180)).await;
    eprintln!(
        "the requests due during the outage completed {:?} after the broker was back",
        back.elapsed()
    );

    poison_is_dead_lettered(&brokers, first[0]).await;

    // The results consumer went on after the poison.
    let later = submit_plain(requests, 9).await;
    wait_completed(requests, &[later], Duration::from_secs(60)).await;
    let answered = answered.lock().unwrap().clone();
    for id in first.iter().chain(&second).chain([&later]) {
        assert!(
            answered.contains(&id.to_string()),
            "the service never answered for {id}"
        );
    }
    eprintln!("{:?} in all", started.elapsed());
    service.abort();
    engine.stop().await;
}

/// Waits until each request is due (at most 30 s).
async fn wait_due(requests: &Requests, ids: &[RequestId]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in ids {
        loop {
            let status = requests.load(*id).await.unwrap().unwrap().request.status();
            if status == RequestStatus::Due {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not become due: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Poisoned results: not JSON, an unknown request, an attempt for a request already closed.
/// Each lands on the dead-letter topic with its reason.
async fn poison_is_dead_lettered(brokers: &str, closed: RequestId) {
    let poison = producer::<FutureProducer>(brokers).unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    let bad = [
        "not json".to_owned(),
        serde_json::json!({"request_id": unknown, "cleaner": "search", "attempt": 1, "outcome": "succeeded"})
            .to_string(),
        serde_json::json!({"request_id": closed, "cleaner": "search", "attempt": 9, "outcome": "failed"})
            .to_string(),
    ];
    for payload in &bad {
        poison
            .send(
                FutureRecord::to(RESULTS).key("poison").payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let dead = Collector::start(brokers, &[DEAD_LETTER]);
    dead.wait_until("three dead letters", Duration::from_secs(60), |seen| {
        seen.len() >= bad.len()
    })
    .await;
    let letters = dead.seen();
    let reasons: Vec<&str> = letters
        .iter()
        .map(|m| m.headers["lethe-reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), bad.len(), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("malformed")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("unknown request")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("can no longer change")),
        "{reasons:?}"
    );
    assert!(letters.iter().all(|m| m.key == "poison"));
}
