//! A database outage is answered fast and honestly, on real Postgres, without touching the
//! shared server: Lethe (the router, with sealing, projections and the workflow running)
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

#[path = "../support/mod.rs"]
mod support;

mod cut_off;
mod errors;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use lethe_engine::config::Config;
use lethe_engine::store::{PostgresStore, StoreError};
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection as _;
use support::chaos_proxy::{ChaosProxy, Mode};
use support::config::TestConfig;
use support::engine::{TestEngine, Wiring};
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

/// Lethe as `lethe serve` runs it (sealing, projections, the workflow), on `store`, called
/// in-process through `app`.
struct Lethe {
    app: Router,
    engine: TestEngine,
}

fn config() -> Arc<Config> {
    Arc::new(TestConfig::new().poll_interval("50ms").build())
}

/// Starts Lethe on `store`, a connection of its own to the schema of `t`.
async fn start(t: &TestStore, store: &Arc<PostgresStore>, config: &Arc<Config>) -> Lethe {
    // The engine's errors in the test's output (shown when it fails): a 500 is logged once,
    // with its cause, and only the log tells which failure was not taken for an outage.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("lethe_engine=error")
        .try_init();
    let TestStore::Postgres { schema, url, .. } = t else {
        unreachable!()
    };
    let own = TestStore::Postgres {
        store: store.clone(),
        schema: schema.clone(),
        url: url.clone(),
    };
    let engine = TestEngine::spawn_with(&own, config.clone(), Wiring::Serve).await;
    Lethe {
        app: engine.router(),
        engine,
    }
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
