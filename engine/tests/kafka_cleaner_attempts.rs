//! A Kafka cleaner's attempts on a par with an HTTP cleaner's, on librdkafka's in-process mock
//! cluster and real databases, with the workflow running as in `lethe serve`:
//! - attempt 1's `callback_timeout` starts when the broker acknowledges the Due message, not
//!   when the dispatch job runs, so a relay that lags (here: the broker is down) does not use
//!   the attempt up (ADR 19);
//! - every cleaner kind counts in the same cleaner metrics, with a `kind` label, whichever way
//!   its result came.
//!
//! Every wait polls a condition with a deadline.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use lethe_domain::{CleanerName, Command, RequestId};

use lethe_engine::kafka::producer;
use lethe_engine::store::EventMetadata;
use lethe_engine::workflow::saga::SAGA;
use lethe_engine::workflow::{Job, JobKind};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::config::{Cleaner, TestConfig};
use support::due::due_request;
use support::engine::{eventually, TestEngine};
use support::fake_service::FakeService;
use support::metrics::sample;
use support::TestStore;

/// How long any wait for a condition may take.
const WITHIN: Duration = Duration::from_secs(60);

const TOPICS: [&str; 5] = [
    "lethe.due",
    "lethe.completed",
    "lethe.cancelled",
    "lethe.cleaner-results",
    "lethe.dead-letter",
];

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for topic in TOPICS {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    cluster
}

/// The workflow's settings here: workers looking for work every 50 ms, Kafka on `brokers`.
fn config(brokers: &str) -> TestConfig {
    TestConfig::new().poll_interval("50ms").kafka(brokers)
}

async fn jobs(store: &TestStore, id: RequestId, kind: JobKind) -> Vec<Job> {
    let (_, workflow) = store.stores();
    let mut jobs = workflow.jobs_of(id).await.unwrap();
    jobs.retain(|j| j.kind == kind);
    jobs
}

async fn attempt_1_s_deadline_starts_at_the_broker_s_ack(store: TestStore) {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let config = config(&brokers).cleaner(Cleaner::kafka("search").callback_timeout("1h"));
    let engine = TestEngine::spawn(&store, config).await;
    let requests = &engine.requests;
    // The relay cannot publish the Due: it lags as long as the broker is down.
    cluster.broker_down(1).unwrap();
    let id = due_request(
        requests,
        BTreeMap::from([("user_id".to_owned(), "k-1".to_owned())]),
    )
    .await;
    let due = requests
        .load(id)
        .await
        .unwrap()
        .unwrap()
        .events
        .last()
        .unwrap()
        .position;
    let (_, workflow) = store.stores();
    eventually(
        WITHIN,
        "the saga has planned the dispatch and it has run",
        || async {
            let saga = workflow.subscription_checkpoint(SAGA).await.unwrap();
            let planned = saga.is_some_and(|at| at.position >= due);
            (planned && jobs(&store, id, JobKind::Dispatch).await.is_empty()).then_some(())
        },
    )
    .await;
    assert_eq!(
        jobs(&store, id, JobKind::Callback).await,
        [],
        "attempt 1's deadline started before the Due was published"
    );

    let up = Utc::now();
    cluster.broker_up(1).unwrap();
    let callback = eventually(WITHIN, "the relay has published the Due", || async {
        jobs(&store, id, JobKind::Callback).await.pop()
    })
    .await;
    assert_eq!(callback.key, "search");
    assert_eq!(callback.attempt, 1);
    assert!(
        callback.run_at >= up + chrono::TimeDelta::hours(1),
        "the deadline {} starts before the broker came back at {up}",
        callback.run_at
    );
    engine.stop().await;
}

async fn every_cleaner_kind_counts_in_the_cleaner_metrics(store: TestStore) {
    lethe_engine::telemetry::metrics::install();
    // Names of this backend's own: both backends' tests share the process's metrics.
    let backend = match store {
        TestStore::Postgres { .. } => "pg",
        TestStore::Sqlite { .. } => "lite",
    };
    let (search, desk, crm) = (
        format!("search-{backend}"),
        format!("desk-{backend}"),
        format!("crm-{backend}"),
    );
    let http = FakeService::start(&[500]).await;
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let config = config(&brokers)
        .cleaner(Cleaner::kafka(&search).callback_timeout("1h"))
        .cleaner(Cleaner::manual(&desk))
        .cleaner(Cleaner::http(&crm, &http.url).extra("retry = { max_attempts = 1 }"));
    let engine = TestEngine::spawn(&store, config).await;
    let requests = &engine.requests;
    let id = due_request(
        requests,
        BTreeMap::from([("user_id".to_owned(), "k-1".to_owned())]),
    )
    .await;
    // The Kafka cleaner answers on the results topic; a person confirms the manual one.
    let result = serde_json::json!({
        "request_id": id, "cleaner": search, "attempt": 1, "outcome": "failed", "retryable": false,
    })
    .to_string();
    producer::<FutureProducer>(&brokers)
        .unwrap()
        .send(
            FutureRecord::to("lethe.cleaner-results")
                .key(&id.to_string())
                .payload(&result),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let desk_name = CleanerName::parse(desk.clone()).unwrap();
    requests
        .execute_result(id, &EventMetadata::new("cli:test"), |_| {
            Command::RecordCleanerSuccess {
                cleaner: desk_name.clone(),
                attempt: 1,
                at: Utc::now(),
                deleted: None,
                detail: None,
            }
        })
        .await
        .unwrap();

    let attempts = "lethe_cleaner_attempts_total";
    for (cleaner, kind, outcome) in [
        (&search, "kafka", "failed"),
        (&desk, "manual", "succeeded"),
        (&crm, "http", "failed_retryable"),
    ] {
        let labels = [
            ("cleaner", cleaner.as_str()),
            ("kind", kind),
            ("outcome", outcome),
        ];
        let count = eventually(
            WITHIN,
            &format!("{cleaner} is counted {outcome}"),
            || async { sample(attempts, &labels) },
        )
        .await;
        assert!((count - 1.0).abs() < f64::EPSILON, "{cleaner}: {count}");
    }
    // Handing an attempt over is timed for the kinds that have a call: the HTTP call, and the
    // Due message until the broker's ack.
    for (cleaner, kind) in [(&search, "kafka"), (&crm, "http")] {
        let labels = [("cleaner", cleaner.as_str()), ("kind", kind)];
        eventually(WITHIN, &format!("{cleaner}'s call is timed"), || async {
            sample("lethe_cleaner_call_duration_seconds_count", &labels)
        })
        .await;
    }
    engine.stop().await;
}

support::backends!(
    attempt_1_s_deadline_starts_at_the_broker_s_ack,
    every_cleaner_kind_counts_in_the_cleaner_metrics,
);
