//! A fake HTTP service on 127.0.0.1 standing in for a cleaner or the notifier: it records
//! every call (with whether its signature verifies) and answers from a script of statuses.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use lethe_engine::cleaners::signature;

pub const SECRET: &str = "cleaner-secret";

/// One call a test server received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub idempotency_key: String,
    pub signature_ok: bool,
    pub body: serde_json::Value,
}

/// A cleaner (or notifier) on 127.0.0.1 that answers with a script of statuses, then 200.
#[derive(Debug, Clone)]
pub struct FakeService {
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    concurrency: Arc<Mutex<(usize, usize)>>,
}

#[derive(Clone)]
struct ServiceState {
    script: Arc<Mutex<Vec<u16>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    failure_rate: f64,
    delay: std::time::Duration,
    /// Calls in progress now, and the most ever at once.
    concurrency: Arc<Mutex<(usize, usize)>>,
}

async fn record(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
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
    state.calls.lock().unwrap().push(Call {
        at: Instant::now(),
        idempotency_key: header("idempotency-key"),
        signature_ok,
        body: serde_json::from_slice(&body).unwrap_or_default(),
    });
    {
        let mut c = state.concurrency.lock().unwrap();
        c.0 += 1;
        c.1 = c.1.max(c.0);
    }
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    state.concurrency.lock().unwrap().0 -= 1;
    let status = {
        let mut script = state.script.lock().unwrap();
        if !script.is_empty() {
            script.remove(0)
        } else if rand::random::<f64>() < state.failure_rate {
            503
        } else {
            200
        }
    };
    let status = StatusCode::from_u16(status).unwrap();
    if status == StatusCode::OK {
        (
            status,
            axum::Json(serde_json::json!({"deleted": {"rows": 1}})),
        )
            .into_response()
    } else {
        status.into_response()
    }
}

impl FakeService {
    pub async fn start(script: &[u16]) -> Self {
        Self::start_with(script, 0.0).await
    }

    /// Like [`FakeService::start`]; after the script, each call fails with 503 with this
    /// probability.
    pub async fn start_with(script: &[u16], failure_rate: f64) -> Self {
        Self::start_full(script, failure_rate, std::time::Duration::ZERO).await
    }

    /// A service that takes `delay` to answer each call.
    pub async fn start_slow(delay: std::time::Duration) -> Self {
        Self::start_full(&[], 0.0, delay).await
    }

    async fn start_full(script: &[u16], failure_rate: f64, delay: std::time::Duration) -> Self {
        let concurrency = Arc::new(Mutex::new((0, 0)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let state = ServiceState {
            script: Arc::new(Mutex::new(script.to_vec())),
            calls: calls.clone(),
            failure_rate,
            delay,
            concurrency: concurrency.clone(),
        };
        let app = Router::new().route("/", post(record)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            calls,
            concurrency,
        }
    }

    /// The most calls this service ever had in progress at once.
    pub fn max_concurrent(&self) -> usize {
        self.concurrency.lock().unwrap().1
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}
