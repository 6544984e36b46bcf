//! Every Due reaches a consumer once, in order per key, across a broker restart.

use super::support::config::TestConfig;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_due_reaches_a_consumer_once_in_order_per_key_across_a_broker_restart() {
    show_logs();
    let started = Instant::now();
    let mut broker = Tansu::start().await;
    broker.create_topics(&[EVENTS], 3).await;
    let brokers = broker.brokers();
    let store = support::sqlite().await;
    let database = store.database();
    let config = TestConfig::new()
        .kafka(&brokers)
        .publish(&["Received", "Due", "Completed", "Cancelled"], EVENTS)
        .build();
    let requests = Requests::new(database.events.clone(), Arc::new(config.clone()));
    // The relay as `lethe serve` runs it: a subscription runner that retries by itself.
    let relay = KafkaRelay {
        producer: producer(&brokers).unwrap(),
        topics: config.kafka.clone().unwrap().publish,
        sink: Arc::new(CallbackJobs(database.workflow.clone())),
        kafka_cleaners: lethe_engine::kafka::kafka_cleaners(&config),
    };
    let runner = SubscriptionRunner {
        events: database.events.clone(),
        subscriptions: database.workflow.clone(),
        owner: "tansu-test".to_owned(),
        lease: Duration::from_secs(60),
        poll_interval: Duration::from_millis(100),
    };
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let relay_task = tokio::spawn(async move { runner.run(&relay, stop).await });
    let observer = Collector::start(&brokers, &[EVENTS]);

    // Before the outage: everything published, acknowledged and consumed.
    let first = submit(&requests, 0..12).await;
    let first_logged = logged_types(&requests, &first).await;
    observer
        .wait_until(
            "every event of the first requests",
            Duration::from_secs(60),
            |seen| all_seen(seen, &first_logged),
        )
        .await;
    let head = database.events.head_position().await.unwrap();
    wait_relayed(&database, head, Duration::from_secs(30)).await;
    let before_outage = observer.seen().len();
    assert_eq!(
        before_outage,
        first_logged.values().map(Vec::len).sum::<usize>(),
        "without an outage each event is delivered exactly once"
    );

    // The broker dies; requests keep becoming due and wait in the log.
    broker.stop();
    let outage = Instant::now();
    let second = submit(&requests, 12..24).await;
    let second_logged = logged_types(&requests, &second).await;
    let head = database.events.head_position().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(
            relay_position(&database).await < head,
            "the relay moved its checkpoint to the head with the broker down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It comes back empty (memory storage): the topic is created again, and the relay, which
    // nobody restarts, publishes the backlog by itself.
    broker.restart().await;
    broker.create_topics(&[EVENTS], 3).await;
    let back = Instant::now();
    observer
        .wait_until(
            "every event of the requests that became due during the outage",
            Duration::from_secs(120),
            |seen| all_seen(seen, &second_logged),
        )
        .await;
    wait_relayed(&database, head, Duration::from_secs(30)).await;
    eprintln!(
        "outage {:?}, backlog delivered {:?} after the broker was back",
        back - outage,
        back.elapsed()
    );

    let seen = observer.seen();
    let repeats = once_and_in_order_per_key(&seen, first_logged.iter().chain(&second_logged));
    eprintln!(
        "{} messages seen for {} requests, {repeats} repeats (published again after the outage); {:?} in all",
        seen.len(),
        first.len() + second.len(),
        started.elapsed()
    );

    let _ = shutdown.send(true);
    tokio::time::timeout(Duration::from_secs(30), relay_task)
        .await
        .expect("the relay stops on shutdown")
        .unwrap();
}

/// Every Due exactly once per request after deduplication on lethe-event-id (delivery
/// is at least once: a batch cut by the outage may be published again), and each request's
/// events in log order: a message with a new event id never has an older position than one
/// seen before it for the same key. Returns the number of repeats.
fn once_and_in_order_per_key<'a>(
    seen: &[Seen],
    logged: impl Iterator<Item = (&'a String, &'a Vec<String>)>,
) -> usize {
    let mut by_key: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for message in seen {
        assert_eq!(message.value["request_id"], message.key);
        assert_eq!(message.event_type(), message.headers["lethe-event-type"]);
        assert_eq!(message.value["event_id"], message.event_id());
        by_key
            .entry(message.key.as_str())
            .or_default()
            .push(message);
    }
    let mut repeats = 0;
    for (key, types) in logged {
        let messages = &by_key[key.as_str()];
        let mut firsts: Vec<&Seen> = Vec::new();
        for message in messages {
            if let Some(earlier) = firsts.iter().find(|m| m.event_id() == message.event_id()) {
                assert_eq!(earlier.value, message.value, "a repeat is the same message");
                repeats += 1;
                continue;
            }
            if let Some(last) = firsts.last() {
                assert!(
                    message.position() > last.position(),
                    "request {key}: {} at {} arrived after {} at {}",
                    message.event_type(),
                    message.position(),
                    last.event_type(),
                    last.position()
                );
            }
            firsts.push(message);
        }
        let delivered: Vec<&str> = firsts.iter().map(|m| m.event_type()).collect();
        assert_eq!(&delivered, types, "request {key}");
        let dues = delivered.iter().filter(|t| **t == "Due").count();
        let expected = usize::from(types.iter().any(|t| t == "Due"));
        assert_eq!(dues, expected, "request {key}: Due once");
    }
    repeats
}
