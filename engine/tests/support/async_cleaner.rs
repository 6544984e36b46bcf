//! A cleaner on 127.0.0.1 that takes every call with 202 and reports its result later, as a
//! batch-job cleaner does: after a random pause it POSTs the outcome of the attempt it was
//! called with to the call's `callback_url`, and keeps trying (the engine behind that URL may
//! be down) until it gets an answer. A repeated call of an attempt is reported again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use lethe_engine::cleaners::signature;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::task::JoinSet;

use crate::support::fake_service::{Call, SECRET};

/// How long the cleaner keeps trying to report one result.
const REPORT_DEADLINE: Duration = Duration::from_secs(90);

/// One report the cleaner made: the attempt, what it said, and the status of the answer that
/// ended its tries (none: no answer before [`REPORT_DEADLINE`]).
#[derive(Debug, Clone)]
pub struct Report {
    pub request_id: String,
    pub attempt: u64,
    pub succeeded: bool,
    pub status: Option<u16>,
    /// Tries that got no answer (the engine was down or died while answering).
    pub unanswered: usize,
}

#[derive(Clone)]
struct CleanerState {
    calls: Arc<Mutex<Vec<Call>>>,
    reports: Arc<Mutex<Vec<Report>>>,
    rng: Arc<Mutex<StdRng>>,
    failure_rate: f64,
    tasks: Arc<Mutex<JoinSet<()>>>,
    http: reqwest::Client,
}

#[derive(Debug)]
pub struct AsyncCleaner {
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    reports: Arc<Mutex<Vec<Report>>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

async fn accept(
    State(state): State<CleanerState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signature_ok = signature::verify(
        SECRET.as_bytes(),
        &header("lethe-signature"),
        &body,
        chrono::Utc::now().timestamp(),
        300,
    )
    .is_ok();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    state.calls.lock().unwrap().push(Call {
        at: Instant::now(),
        idempotency_key: header("idempotency-key"),
        signature_ok,
        body: body.clone(),
    });
    let (Some(callback), Some(attempt), Some(request_id)) = (
        body["callback_url"].as_str().map(str::to_owned),
        body["attempt"].as_u64(),
        body["request_id"].as_str().map(str::to_owned),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    let (pause, succeeded) = {
        let mut rng = state.rng.lock().unwrap();
        (
            Duration::from_millis(rng.random_range(0..=400)),
            !rng.random_bool(state.failure_rate),
        )
    };
    let task_state = state.clone();
    state.tasks.lock().unwrap().spawn(async move {
        tokio::time::sleep(pause).await;
        let report = if succeeded {
            serde_json::json!({"attempt": attempt, "outcome": "succeeded", "deleted": {"rows": 1}})
        } else {
            serde_json::json!({"attempt": attempt, "outcome": "failed", "detail": "batch job failed"})
        };
        let deadline = Instant::now() + REPORT_DEADLINE;
        let mut unanswered = 0;
        let status = loop {
            let answer = task_state
                .http
                .post(&callback)
                .json(&report)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            // Any status but a 5xx is the engine's word on the result; a 5xx or no answer
            // at all is tried again, as a cleaner's HTTP client would.
            match answer {
                Ok(response) if !response.status().is_server_error() => {
                    break Some(response.status().as_u16());
                }
                _ => unanswered += 1,
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        task_state.reports.lock().unwrap().push(Report {
            request_id,
            attempt,
            succeeded,
            status,
            unanswered,
        });
    });
    StatusCode::ACCEPTED
}

impl AsyncCleaner {
    /// Reports a failure (retryable) for this share of the attempts, drawn from `seed`.
    pub async fn start(seed: u64, failure_rate: f64) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let state = CleanerState {
            calls: calls.clone(),
            reports: reports.clone(),
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            failure_rate,
            tasks: tasks.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        let app = Router::new().route("/", post(accept)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tasks.lock().unwrap().spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            calls,
            reports,
            tasks,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn reports(&self) -> Vec<Report> {
        self.reports.lock().unwrap().clone()
    }
}

impl Drop for AsyncCleaner {
    fn drop(&mut self) {
        self.tasks.lock().unwrap().abort_all();
    }
}
