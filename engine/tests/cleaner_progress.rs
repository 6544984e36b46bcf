//! Progress of a long erasure (ADR 36). A cleaner that answered 202 may post
//! `{"attempt": n, "progress": {"done": .., "total": ..}}` to its result endpoint, or put the
//! same on the Kafka results topic: each report moves the attempt's callback deadline to a
//! whole `callback_timeout` from now, is shown in the request view, and is not an event (only
//! the latest is kept). Progress on an attempt whose result is not awaited is refused.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use chrono::{DurationRound as _, TimeDelta, Utc};
use lethe_domain::{CleanerName, RequestId, RequestStatus};
use lethe_engine::app::progress::{CleanerProgress, Progress};
use lethe_engine::cleaners::AwaitedResult;
use lethe_engine::http::auth::token_hash;
use lethe_engine::kafka::producer;
use lethe_engine::workflow::{callback_job, Job, JobKind};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use support::config::{Cleaner, TestConfig};
use support::due::due_request;
use support::engine::{eventually, TestEngine};
use support::TestStore;

const CLEANER_TOKEN: &str = "tok-vault";
const READER_TOKEN: &str = "tok-reader";
const WITHIN: Duration = Duration::from_secs(20);

fn subject() -> BTreeMap<String, String> {
    BTreeMap::from([("email".to_owned(), "grace.hopper@example.com".to_owned())])
}

/// A cleaner on 127.0.0.1 that accepts every call (202) and counts them.
async fn accepting_cleaner() -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/erase",
        post(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::ACCEPTED, "{\"job\":\"17\"}")
            }
        }),
    );
    let (base, _server) = support::serve_router(app).await;
    (format!("{base}/erase"), calls)
}

async fn callback_of(engine: &TestEngine, id: RequestId) -> Job {
    eventually(WITHIN, "the cleaner accepted the call", || async {
        engine
            .jobs(id)
            .await
            .into_iter()
            .find(|j| j.kind == JobKind::Callback)
    })
    .await
}

async fn view(engine: &TestEngine, id: RequestId) -> Value {
    let answer = engine
        .client
        .get(engine.url(&format!("/v1/requests/{id}")))
        .bearer_auth(READER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

async fn report(engine: &TestEngine, id: RequestId, token: &str, body: Value) -> (u16, Value) {
    engine
        .post_as(
            Some(token),
            &format!("/v1/requests/{id}/cleaners/vault/result"),
            body,
        )
        .await
}

/// Progress refused: on an attempt never made, with counts that contradict each other, under
/// another's token, or mixed with an outcome.
async fn refusals(engine: &TestEngine, id: RequestId) {
    let (status, answer) = report(
        engine,
        id,
        CLEANER_TOKEN,
        json!({"attempt": 2, "progress": {"done": 1}}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["type"], "urn:lethe:problem:not-awaited", "{answer}");
    let (status, answer) = report(
        engine,
        id,
        CLEANER_TOKEN,
        json!({"attempt": 1, "progress": {"done": 6, "total": 5}}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("progress.done"),
        "{answer}"
    );
    let (status, _) = report(
        engine,
        id,
        READER_TOKEN,
        json!({"attempt": 1, "progress": {"done": 1}}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, answer) = report(
        engine,
        id,
        CLEANER_TOKEN,
        json!({"attempt": 1, "outcome": "succeeded", "progress": {"done": 1}}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
}

async fn progress_holds_the_deadline_and_is_not_an_event(store: TestStore) {
    let (url, calls) = accepting_cleaner().await;
    let config = TestConfig::new()
        .cleaner(Cleaner::http("vault", &url).callback_timeout("1h"))
        .token("vault", &token_hash(CLEANER_TOKEN), &["cleaner:vault"])
        .token("reader", &token_hash(READER_TOKEN), &["requests:read"]);
    let engine = TestEngine::spawn(&store, config).await;
    let id = due_request(&engine.requests, subject()).await;
    let accepted = callback_of(&engine, id).await;
    assert_eq!((accepted.key.as_str(), accepted.attempt), ("vault", 1));
    let version = engine.load(id).await.version();

    let before = Utc::now();
    let (status, answer) = report(
        &engine,
        id,
        CLEANER_TOKEN,
        json!({"attempt": 1, "progress": {"done": 1200, "total": 5000}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let progress = &answer["cleaners"][0]["progress"];
    assert_eq!(
        (&progress["attempt"], &progress["done"], &progress["total"]),
        (&json!(1), &json!(1200), &json!(5000)),
        "{answer}"
    );
    // The deadline is now a whole callback_timeout from the report, later than the one the
    // 202 set; the report is no event.
    let moved = callback_of(&engine, id).await;
    assert!(moved.run_at >= before + TimeDelta::hours(1), "{moved:?}");
    assert!(moved.run_at > accepted.run_at, "{moved:?} {accepted:?}");
    assert_eq!(
        progress["deadline"].as_str().unwrap(),
        moved
            .run_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    assert_eq!(engine.load(id).await.version(), version);

    // Only the latest report is kept, and the request view shows it.
    let (status, _) = report(
        &engine,
        id,
        CLEANER_TOKEN,
        json!({"attempt": 1, "progress": {"done": 2500}}),
    )
    .await;
    assert_eq!(status, 200);
    let shown = view(&engine, id).await;
    let progress = &shown["cleaners"][0]["progress"];
    assert_eq!(progress["done"], 2500, "{shown}");
    assert!(progress.get("total").is_none(), "{shown}");

    refusals(&engine, id).await;
    assert_eq!(engine.load(id).await.version(), version);

    // The result ends the wait: the request completes, and progress is no longer taken.
    let (status, answer) = report(
        &engine,
        id,
        CLEANER_TOKEN,
        json!({"attempt": 1, "outcome": "succeeded", "deleted": {"rows": 5000}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    engine.wait_for(id, RequestStatus::Completed, WITHIN).await;
    let shown = view(&engine, id).await;
    assert!(shown["cleaners"][0].get("progress").is_none(), "{shown}");
    let (status, _) = report(
        &engine,
        id,
        CLEANER_TOKEN,
        json!({"attempt": 1, "progress": {"done": 5000}}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    engine.stop().await;
}

/// The store's side, at controlled times: a report moves the deadline only while it is ahead
/// and no worker holds the job; a new attempt starts without the old one's report.
async fn a_report_after_the_deadline_is_refused(store: TestStore) {
    let database = store.database();
    let id = RequestId::from_uuid(uuid::Uuid::now_v7());
    let vault = CleanerName::parse("vault").unwrap();
    // Whole microseconds, as both stores keep times.
    let t0 = Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap();
    let awaited = |attempt, deadline| AwaitedResult {
        request_id: id,
        cleaner: vault.clone(),
        attempt,
        deadline,
    };
    database
        .workflow
        .apply(&[callback_job(&awaited(1, t0 + TimeDelta::minutes(10)))])
        .await
        .unwrap();
    let reported = |done, at: chrono::DateTime<Utc>| CleanerProgress {
        cleaner: vault.clone(),
        attempt: 1,
        progress: Progress::new(done, Some(100)).unwrap(),
        at,
        deadline: at + TimeDelta::minutes(10),
    };
    let heartbeat = |done, now| {
        let database = database.clone();
        let reported = reported(done, now);
        async move {
            database
                .awaited
                .heartbeat(id, &reported, now)
                .await
                .unwrap()
        }
    };
    assert!(heartbeat(10, t0 + TimeDelta::minutes(5)).await);
    assert!(
        heartbeat(20, t0 + TimeDelta::minutes(14)).await,
        "the first report moved it"
    );
    // Past the deadline the report moved it to (14 + 10 minutes): refused, nothing changes.
    assert!(!heartbeat(30, t0 + TimeDelta::minutes(25)).await);
    let kept = database.awaited.progress_of(id).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].progress.done, 20);
    assert_eq!(kept[0].deadline, t0 + TimeDelta::minutes(24));

    // A worker holding the job (failing it at its deadline) wins over a report.
    let claimed = database
        .workflow
        .claim_jobs(
            &[JobKind::Callback],
            "timer",
            t0 + TimeDelta::minutes(24),
            Duration::from_secs(60),
            10,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(!heartbeat(40, t0 + TimeDelta::minutes(24)).await);

    // Attempt 2 is awaited afresh: attempt 1's report is gone.
    database
        .workflow
        .apply(&[callback_job(&awaited(2, t0 + TimeDelta::hours(2)))])
        .await
        .unwrap();
    assert!(database.awaited.progress_of(id).await.unwrap().is_empty());
}

async fn progress_on_kafka_moves_the_deadline(store: TestStore) {
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["lethe.cleaner-results", "lethe.dead-letter"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let config = TestConfig::new()
        .kafka(&brokers)
        .cleaner(Cleaner::kafka("search").callback_timeout("1h"))
        .build();
    let kafka = config.kafka.clone().unwrap();
    let database = store.database();
    let requests = database.app(Arc::new(config), None);
    let id = due_request(&requests, subject()).await;
    let accepted_deadline = Utc::now() + TimeDelta::minutes(1);
    database
        .workflow
        .apply(&[callback_job(&AwaitedResult {
            request_id: id,
            cleaner: CleanerName::parse("search").unwrap(),
            attempt: 1,
            deadline: accepted_deadline,
        })])
        .await
        .unwrap();
    let version = requests.load(id).await.unwrap().unwrap().version();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(lethe_engine::kafka::run_results_consumer(
        kafka,
        requests.clone(),
        shutdown,
    ));
    let producer = producer::<FutureProducer>(&brokers).unwrap();
    let message = json!({
        "request_id": id, "cleaner": "search", "attempt": 1,
        "progress": {"done": 40, "total": 90},
    })
    .to_string();
    producer
        .send(
            FutureRecord::to("lethe.cleaner-results")
                .key(&id.to_string())
                .payload(&message),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let kept = eventually(WITHIN, "the progress is kept", || async {
        database
            .awaited
            .progress_of(id)
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(kept.progress, Progress::new(40, Some(90)).unwrap());
    assert!(
        kept.deadline >= accepted_deadline + TimeDelta::minutes(50),
        "{kept:?}"
    );
    let _ = stop.send(true);
    consumer.await.unwrap();
    assert_eq!(requests.load(id).await.unwrap().unwrap().version(), version);
}

support::backends!(
    progress_holds_the_deadline_and_is_not_an_event,
    a_report_after_the_deadline_is_refused,
    progress_on_kafka_moves_the_deadline,
);
