//! A database outage is answered fast and honestly, on real Postgres, without touching the
//! shared server: Lethe (the router, with sealing, read models and the workflow running)
//! reaches Postgres through a TCP proxy the test controls, while clients keep submitting and,
//! like real clients, submit the same subject again after a 503.
//!
//! - Cut off (port closed and every connection reset, then new connections swallowed as in a
//!   partition): `/readyz` and a submission answer 503 `application/problem+json` with
//!   `Retry-After` well within 1.5 s, not after the old 10 s; after the proxy opens again,
//!   requests succeed without restarting anything, and the workflow catches up.
//! - Lethe's own backends terminated (`pg_terminate_backend`, SQLSTATE 57P01) while requests
//!   are in flight: every answer is 2xx or 503, never 500.
//! - In both, nothing answered 2xx is lost and nothing is recorded twice: every subject that
//!   was answered has exactly one request in the log, the one it was answered with, even when
//!   a commit cut off by the outage had in fact landed (its retry is answered 200 with it).
//! - A batch of appends cut off fails at once, not one append after another.
//! - `lethe serve` starting while the database is not up yet waits for it (longer than the
//!   short acquire time-out requests get).
//! - The errors themselves, raised by real servers: Postgres's connection, shutdown and
//!   resource SQLSTATEs and SQLite's "database is locked" are `StoreError::Unavailable`; a
//!   unique violation is not.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use lethe_engine::app::Requests;
use lethe_engine::config::{Config, ConfigDuration};
use lethe_engine::http::{router, AppState};
use lethe_engine::root::Runtime;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{PostgresStore, StoreError};
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection as _;
use support::chaos_proxy::{ChaosProxy, Mode};
use support::TestStore;
use tokio::time::Instant;
use tower::ServiceExt as _;

/// What "within about a second" is held to: generous against a slow machine, far below the
/// 10 s a request used to wait.
const FAST: Duration = Duration::from_millis(1500);
/// `/readyz` must beat the 1 s time-out readiness probes commonly have.
const READY_FAST: Duration = Duration::from_secs(1);
/// Concurrent clients submitting throughout.
const CLIENTS: usize = 4;
/// How long one subject may take to be answered 2xx, retries included.
const SUBJECT_DEADLINE: Duration = Duration::from_secs(60);
/// How long any other awaited condition may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// One answer a client got.
#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    elapsed: Duration,
    retry_after: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{self:?} is not JSON: {e}"))
    }

    /// A 503 problem saying when to retry.
    fn assert_unavailable(&self) {
        assert_eq!(self.status, StatusCode::SERVICE_UNAVAILABLE, "{self:?}");
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/problem+json"),
            "{self:?}"
        );
        let seconds: u64 = self
            .retry_after
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After in seconds: {self:?}"));
        assert!(seconds >= 1, "{self:?}");
        let body = self.json();
        assert_eq!(body["status"], 503, "{self:?}");
        assert_eq!(body["type"], "urn:lethe:problem:unavailable", "{self:?}");
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let started = Instant::now();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let retry_after = text(header::RETRY_AFTER);
    let content_type = text(header::CONTENT_TYPE);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        elapsed: started.elapsed(),
        retry_after,
        content_type,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn submit(app: &Router, subject: &str) -> Answer {
    let body = format!(r#"{{"subject":{{"user_id":"{subject}"}}}}"#);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/requests")
        .body(Body::from(body))
        .unwrap();
    send(app, request).await
}

async fn ready(app: &Router) -> Answer {
    send(app, Request::get("/readyz").body(Body::empty()).unwrap()).await
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Seen {
    /// The request each answered subject was given.
    answered: BTreeMap<String, String>,
    /// Every status, counted.
    statuses: BTreeMap<u16, usize>,
    /// Answers that are neither 2xx nor a proper 503 problem.
    wrong: Vec<Answer>,
    /// Subjects answered 200 on a retry after a 503: the cut-off commit had landed.
    landed_anyway: usize,
}

/// Lethe as `lethe serve` runs it (sealing, read models, the workflow), on `store`.
struct Lethe {
    app: Router,
    runtime: Runtime,
}

fn config() -> Arc<Config> {
    let mut config = Config::default();
    config.engine.poll_interval = ConfigDuration(Duration::from_millis(50));
    Arc::new(config)
}

fn start(store: &Arc<PostgresStore>, config: &Arc<Config>) -> Lethe {
    let key = MasterKey::from_bytes([0x42; 32]);
    let requests = Requests::new(store.clone(), config.clone())
        .with_read_models(store.clone())
        .with_sealing(key.clone(), store.clone());
    let runtime = Runtime::start(
        requests.clone(),
        store.clone(),
        config.clone(),
        key.clone(),
        "http://127.0.0.1:9".to_owned(),
    );
    let app = router(AppState { requests, key });
    Lethe { app, runtime }
}

/// Clients submitting new subjects until `stop`, each retrying a subject after a 503 until it
/// is answered 2xx (so no subject is left half-done when they stop).
fn clients(
    app: &Router,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|client| {
            let (app, stop, seen) = (app.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                for n in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let subject = format!("{client}-{n}-{}", uuid::Uuid::new_v4().simple());
                    let deadline = Instant::now() + SUBJECT_DEADLINE;
                    let mut refused = false;
                    loop {
                        let answer = submit(&app, &subject).await;
                        match record(&seen, &subject, answer, refused) {
                            Step::Answered => break,
                            Step::Retry => refused = true,
                            Step::Wrong => return,
                        }
                        assert!(
                            Instant::now() < deadline,
                            "subject {subject} never answered 2xx"
                        );
                        // A client's pause before retrying (the test's pace, not a wait for
                        // a condition: the loop is the wait).
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect()
}

/// What a client does after an answer.
enum Step {
    Answered,
    Retry,
    Wrong,
}

/// Records a client's answer for `subject` (`refused`: an earlier attempt was answered 503).
fn record(seen: &Mutex<Seen>, subject: &str, answer: Answer, refused: bool) -> Step {
    let mut seen = seen.lock().unwrap();
    *seen.statuses.entry(answer.status.as_u16()).or_default() += 1;
    match answer.status {
        // A fresh subject is answered 200 only if an attempt cut off by the outage landed.
        StatusCode::OK if !refused => {
            seen.wrong.push(answer);
            Step::Wrong
        }
        StatusCode::CREATED | StatusCode::OK => {
            if answer.status == StatusCode::OK {
                seen.landed_anyway += 1;
            }
            let id = answer.json()["id"].as_str().unwrap().to_owned();
            seen.answered.insert(subject.to_owned(), id);
            Step::Answered
        }
        StatusCode::SERVICE_UNAVAILABLE
            if answer.retry_after.is_some()
                && answer.content_type.as_deref() == Some("application/problem+json") =>
        {
            Step::Retry
        }
        _ => {
            seen.wrong.push(answer);
            Step::Wrong
        }
    }
}

/// Waits until the clients have had `n` subjects answered in all.
async fn wait_answered(seen: &Arc<Mutex<Seen>>, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        {
            let seen = seen.lock().unwrap();
            assert!(
                seen.wrong.is_empty(),
                "answers other than 2xx or 503: {:?}",
                seen.wrong
            );
            if seen.answered.len() >= n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} subjects were answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every answered subject has exactly one request in the log, the one it was answered with,
/// and the log holds no other; the workflow (the saga, through the same outage) has planned
/// every one of them.
async fn assert_log_matches(t: &TestStore, seen: &Seen) {
    let TestStore::Postgres { store, .. } = t else {
        unreachable!()
    };
    let ids: BTreeSet<String> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT stream_id FROM streams")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|id| id.to_string())
            .collect();
    let answered: BTreeSet<String> = seen.answered.values().cloned().collect();
    assert_eq!(
        answered.len(),
        seen.answered.len(),
        "two subjects were answered with one request"
    );
    let missing: Vec<_> = answered.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "answered 2xx but not in the log: {missing:?}"
    );
    let extra: Vec<_> = ids.difference(&answered).collect();
    assert!(
        extra.is_empty(),
        "in the log but never answered (a duplicate): {extra:?}"
    );

    let deadline = Instant::now() + DEADLINE;
    loop {
        let planned = t
            .fetch_integers("SELECT count(DISTINCT request_id) FROM jobs WHERE kind = 'due'")
            .await[0];
        if usize::try_from(planned).unwrap() == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the saga planned {planned} of {} requests after the outage",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn postgres_target(url: &str) -> SocketAddr {
    let options = PgConnectOptions::from_str(url).unwrap();
    (options.get_host(), options.get_port())
        .to_socket_addrs()
        .unwrap()
        .find(SocketAddr::is_ipv4)
        .expect("the test database is reached over IPv4 TCP")
}

/// Checks that `/readyz` and a submission are answered 503 fast, a few times over.
async fn assert_fast_503(app: &Router, what: &str) {
    for _ in 0..3 {
        let answer = ready(app).await;
        answer.assert_unavailable();
        assert!(
            answer.elapsed < READY_FAST,
            "{what}: /readyz took {:?}",
            answer.elapsed
        );
        eprintln!("{what}: /readyz answered 503 in {:?}", answer.elapsed);
        let answer = submit(app, &format!("probe-{}", uuid::Uuid::new_v4())).await;
        answer.assert_unavailable();
        assert!(
            answer.elapsed < FAST,
            "{what}: a submission took {:?}",
            answer.elapsed
        );
        eprintln!("{what}: a submission answered 503 in {:?}", answer.elapsed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_off_is_answered_503_fast_and_recovered_from_without_loss() {
    let t = support::postgres().await;
    let TestStore::Postgres { schema, url, .. } = &t else {
        unreachable!()
    };
    let proxy = ChaosProxy::start(postgres_target(url)).await;
    let config = config();
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .options([("search_path", schema.as_str())]);
    let store = Arc::new(
        PostgresStore::connect_with_timeout(options, config.database.acquire_timeout.0)
            .await
            .unwrap(),
    );
    let lethe = start(&store, &config);
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let clients = clients(&lethe.app, &stop, &seen);
    wait_answered(&seen, 20).await;

    // The port closed and every connection reset: the server is gone.
    proxy.set(Mode::Refuse).await;
    proxy.reset_all();
    assert_fast_503(&lethe.app, "refused").await;
    // A partition: connections are accepted and never answered.
    proxy.set(Mode::Blackhole).await;
    assert_fast_503(&lethe.app, "swallowed").await;

    let before = seen.lock().unwrap().answered.len();
    proxy.set(Mode::Open).await;
    let deadline = Instant::now() + DEADLINE;
    while ready(&lethe.app).await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "/readyz never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The clients' subjects held up by the outage are answered, and new ones after them.
    wait_answered(&seen, before + 20).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "cut off: statuses {:?}, {} subjects, {} landed despite a 503",
        seen.statuses,
        seen.answered.len(),
        seen.landed_anyway
    );
    assert!(
        seen.wrong.is_empty(),
        "answers other than 2xx or 503: {:?}",
        seen.wrong
    );
    assert!(
        seen.statuses.get(&503).copied().unwrap_or(0) > 0,
        "the clients never met the outage"
    );
    assert_log_matches(&t, &seen).await;
    lethe.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_terminated_under_load_are_answered_2xx_or_503_never_500() {
    let t = support::postgres().await;
    let TestStore::Postgres { schema, url, .. } = &t else {
        unreachable!()
    };
    // Lethe's connections carry a name of their own: only they are terminated.
    let application = format!("lethe_outage_{}", uuid::Uuid::new_v4().simple());
    let config = config();
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .application_name(&application)
        .options([("search_path", schema.as_str())]);
    let store = Arc::new(
        PostgresStore::connect_with_timeout(options, config.database.acquire_timeout.0)
            .await
            .unwrap(),
    );
    let lethe = start(&store, &config);
    let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let clients = clients(&lethe.app, &stop, &seen);
    // Readers too: the request just answered, and the readiness check.
    let reader = {
        let (app, stop, seen) = (lethe.app.clone(), stop.clone(), seen.clone());
        tokio::spawn(async move {
            let mut wrong = Vec::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let last = seen.lock().unwrap().answered.values().last().cloned();
                if let Some(id) = last {
                    let path = format!("/v1/requests/{id}");
                    let answer = send(&app, Request::get(path).body(Body::empty()).unwrap()).await;
                    if !(answer.status == StatusCode::OK
                        || answer.status == StatusCode::SERVICE_UNAVAILABLE)
                    {
                        wrong.push(answer);
                    }
                }
                let answer = ready(&app).await;
                if !(answer.status == StatusCode::OK
                    || answer.status == StatusCode::SERVICE_UNAVAILABLE)
                {
                    wrong.push(answer);
                }
            }
            wrong
        })
    };

    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let mut terminated = 0_i64;
    for round in 1..=10 {
        wait_answered(&seen, round * 10).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&application)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        terminated += n;
    }
    wait_answered(&seen, 120).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let reads_wrong = reader.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "terminated {terminated} backends: statuses {:?}, {} subjects, {} landed despite a 503",
        seen.statuses,
        seen.answered.len(),
        seen.landed_anyway
    );
    assert!(
        terminated >= 10,
        "only {terminated} backends were terminated"
    );
    assert!(
        seen.wrong.is_empty(),
        "submissions answered other than 2xx or 503: {:?}",
        seen.wrong
    );
    assert!(
        reads_wrong.is_empty(),
        "reads answered other than 200 or 503: {reads_wrong:?}"
    );
    assert_log_matches(&t, &seen).await;
    lethe.runtime.stop().await;
}

#[tokio::test]
async fn starting_waits_for_a_database_that_is_not_up_yet() {
    let t = support::postgres().await;
    let TestStore::Postgres { schema, url, .. } = &t else {
        unreachable!()
    };
    let proxy = ChaosProxy::start(postgres_target(url)).await;
    proxy.set(Mode::Refuse).await;
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .options([("search_path", schema.as_str())]);
    let acquire_timeout = Duration::from_secs(1);
    let connecting = tokio::spawn(PostgresStore::connect_with_timeout(
        options,
        acquire_timeout,
    ));
    // The database stays away for twice the acquire time-out (the outage is the test's
    // doing; the sleep is its length, not a wait for something to happen).
    tokio::time::sleep(acquire_timeout * 2).await;
    assert!(
        !connecting.is_finished(),
        "connecting gave up after the acquire time-out: {:?}",
        connecting.await
    );
    proxy.set(Mode::Open).await;
    let store = tokio::time::timeout(DEADLINE, connecting)
        .await
        .expect("connecting never ended")
        .unwrap()
        .expect("connecting failed once the database was up");
    use lethe_engine::store::EventStore as _;
    store.ping().await.unwrap();
}

#[tokio::test]
async fn a_batch_cut_off_fails_at_once_not_append_by_append() {
    use lethe_domain::event::Reminded;
    use lethe_domain::{Event, RequestId};
    use lethe_engine::store::{Append, EventMetadata, EventStore as _};

    let t = support::postgres().await;
    let TestStore::Postgres { schema, url, .. } = &t else {
        unreachable!()
    };
    let proxy = ChaosProxy::start(postgres_target(url)).await;
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .options([("search_path", schema.as_str())]);
    let store = PostgresStore::connect_with_timeout(options, Duration::from_secs(1))
        .await
        .unwrap();
    proxy.set(Mode::Refuse).await;
    proxy.reset_all();
    // One batch of appends (as bulk intake writes them): written one by one after the
    // batch failed, each would wait out its own acquire time-out.
    let appends: Vec<Append> = (0..20)
        .map(|index| Append {
            stream_id: RequestId::from_uuid(uuid::Uuid::now_v7()),
            expected_version: 0,
            events: vec![Event::Reminded(Reminded {
                index,
                at: chrono::Utc::now(),
            })],
            metadata: EventMetadata::new("test"),
            key: None,
        })
        .collect();
    let started = Instant::now();
    let results = store.append_batch(appends).await;
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 20);
    for result in &results {
        assert!(
            matches!(result, Err(error) if error.is_unavailable()),
            "{result:?}"
        );
    }
    assert!(
        elapsed < FAST,
        "the batch's appends were answered after {elapsed:?}"
    );
    proxy.set(Mode::Open).await;
    assert_eq!(t.fetch_integers("SELECT count(*) FROM events").await, [0]);
}

/// Raises `sqlstate` on a real Postgres connection and classifies the error.
async fn postgres_error(url: &str, sqlstate: &str) -> StoreError {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{sqlstate}'; END $$");
    let error = sqlx::raw_sql(&sql)
        .execute(&mut connection)
        .await
        .unwrap_err();
    StoreError::from(error)
}

#[tokio::test]
async fn outage_sqlstates_from_a_real_server_are_unavailable_and_others_are_not() {
    let url = support::postgres_url();
    for code in ["08006", "08001", "57P01", "57P02", "57P03", "53300"] {
        let error = postgres_error(&url, code).await;
        assert!(error.is_unavailable(), "{code}: {error:?}");
    }
    for code in ["23505", "22P02", "P0001"] {
        let error = postgres_error(&url, code).await;
        assert!(!error.is_unavailable(), "{code}: {error:?}");
    }
    // Lethe's own backend terminated under it: the error a request in flight gets.
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    let error = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut connection)
        .await
        .unwrap_err();
    let error = StoreError::from(error);
    assert!(error.is_unavailable(), "{error:?}");
}

#[tokio::test]
async fn sqlite_locked_by_another_connection_is_unavailable() {
    use sqlx::sqlite::SqliteConnectOptions;
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("locked.db"))
        .create_if_missing(true)
        .busy_timeout(Duration::ZERO);
    let mut holder = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut other = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let error = sqlx::raw_sql("INSERT INTO t VALUES (2)")
        .execute(&mut other)
        .await
        .unwrap_err();
    let error = StoreError::from(error);
    assert!(error.is_unavailable(), "{error:?}");
    // A real mistake is not an outage.
    let error = StoreError::from(
        sqlx::raw_sql("INSERT INTO missing VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap_err(),
    );
    assert!(!error.is_unavailable(), "{error:?}");
}
