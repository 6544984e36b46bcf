//! A Kafka cleaner with a topic of its own, end to end on tansu: every attempt arrives on the
//! cleaner's topic carrying only its identifiers, keyed by a stable per-subject key, so one
//! person's requests share a key and a partition of a three-partition topic; a service that reads it
//! and answers on the results topic completes the requests, and no identifier reaches the
//! shared Due topic.

use super::support::config::{Cleaner, TestConfig};
use super::support::engine::TestEngine;
use super::*;

const SEARCH_TOPIC: &str = "lethe.erase.search";

/// One attempt as the service read it: (partition, key, value).
type Read = (i32, String, serde_json::Value);

/// The `search` service: reads its topic and answers every attempt, succeeded, on the results
/// topic; keeps what it read.
fn start_search_service(brokers: String) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Read>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let reads = log.clone();
    let task = tokio::spawn(async move {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "search-own-topic")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&[SEARCH_TOPIC]).unwrap();
        let results = producer::<FutureProducer>(&brokers).unwrap();
        loop {
            let Ok(message) = consumer.recv().await else {
                continue;
            };
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let request_id = value["request_id"].as_str().unwrap().to_owned();
            let result = serde_json::json!({
                "request_id": request_id,
                "cleaner": "search",
                "attempt": value["attempt"],
                "outcome": "succeeded",
                "deleted": {"documents": 1},
            })
            .to_string();
            results
                .send(
                    FutureRecord::to(RESULTS).key(&request_id).payload(&result),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            reads
                .lock()
                .unwrap()
                .push((message.partition(), key, value));
        }
    });
    (task, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_topic_cleaner_gets_only_its_identifiers_keyed_per_subject() {
    show_logs();
    let broker = Tansu::start().await;
    broker.create_topics(&CLEANER_TOPICS, 1).await;
    broker.create_topics(&[SEARCH_TOPIC], 3).await;
    let brokers = broker.brokers();
    let store = support::postgres().await;
    let search = Cleaner::kafka("search")
        .identifiers(&["email"])
        .callback_timeout("10m")
        .extra(&format!(
            "topic = {SEARCH_TOPIC:?}\npartition_key = \"subject\""
        ));
    let config = TestConfig::new()
        .grace("1s")
        .no_reminders()
        .poll_interval("50ms")
        .kafka(&brokers)
        .cleaner(search);
    let engine = TestEngine::spawn(&store, config).await;
    let (service, reads) = start_search_service(brokers.clone());
    let due = Collector::start(&brokers, &[DUE]);

    let (people, ids) = erase_in_two_rounds(&engine).await;
    let reads = reads.lock().unwrap().clone();
    assert_eq!(reads.len(), ids.len(), "one attempt per request: {reads:?}");
    each_person_has_one_key(&reads, &people, &ids);

    // Everyone reading the Due topic sees no identifier.
    due.wait_until("a Due per request", Duration::from_secs(30), |seen| {
        seen.len() >= ids.len()
    })
    .await;
    for message in due.seen() {
        let text = message.value.to_string();
        assert!(
            !text.contains("example.com") && !text.contains("secret-user"),
            "{text}"
        );
    }
    service.abort();
    engine.stop().await;
}

/// Six people; then two of them ask again (a subject's open request answers a new submission,
/// so they ask once the first is completed). Each request is completed by the service's
/// result. Returns the person of each request, and the requests' ids.
async fn erase_in_two_rounds(engine: &TestEngine) -> (Vec<usize>, Vec<RequestId>) {
    let people: Vec<usize> = vec![0, 1, 2, 3, 4, 5, 0, 1];
    let mut ids = Vec::new();
    for round in [&people[..6], &people[6..]] {
        let mut submitted = Vec::new();
        for person in round {
            let email = format!("person{person}@example.com");
            let user_id = format!("secret-user-{person}");
            submitted.push(
                engine
                    .submit_due(&[("email", &email), ("user_id", &user_id)])
                    .await,
            );
        }
        for id in &submitted {
            let loaded = engine
                .wait_for(*id, RequestStatus::Completed, Duration::from_secs(90))
                .await;
            let success = loaded
                .events
                .iter()
                .find(|e| e.event_type == "CleanerSucceeded")
                .expect("completed by the service's result");
            assert_eq!(success.actor, "cleaner:search");
            assert_eq!(success.payload["deleted"]["documents"], 1);
        }
        ids.extend(submitted);
    }
    (people, ids)
}

/// Every attempt carries only the person's email, under a key that is not an identifier,
/// the same key and partition for each of one person's requests, and another key for each
/// person; the people are spread over more than one partition.
fn each_person_has_one_key(reads: &[Read], people: &[usize], ids: &[RequestId]) {
    let mut key_of_person: HashMap<usize, (i32, String)> = HashMap::new();
    for (partition, key, value) in reads {
        assert_eq!(value["type"], "CleanerAttempt");
        let n = ids
            .iter()
            .position(|id| value["request_id"] == id.to_string())
            .expect("a request of this test");
        let person = people[n];
        assert_eq!(
            value["subject"],
            serde_json::json!({"email": format!("person{person}@example.com")}),
            "only the email"
        );
        assert!(!value.to_string().contains("secret-user"), "{value}");
        assert!(
            !key.contains("example.com"),
            "the key is not the identifier"
        );
        let first = key_of_person
            .entry(person)
            .or_insert_with(|| (*partition, key.clone()));
        assert_eq!(first, &(*partition, key.clone()), "person {person}'s key");
    }
    let distinct: HashSet<&String> = key_of_person.values().map(|(_, k)| k).collect();
    assert_eq!(distinct.len(), 6, "one key per person");
    let partitions: HashSet<i32> = key_of_person.values().map(|(p, _)| *p).collect();
    assert!(
        partitions.len() > 1,
        "people spread over partitions: {partitions:?}"
    );
}
