#![allow(dead_code)] // each test binary uses a different part of this module

//! A cleaner on 127.0.0.1 that speaks both the single call and the batch call of
//! docs/CLEANERS.md, answering each request as a test decides (by its subject and attempt),
//! after a random delay, and recording every request it was sent with the time it arrived.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use lethe_engine::cleaners::signature;
use serde_json::{json, Value};

use crate::support::fake_service::SECRET;

/// How the service answers for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Succeed,
    /// Failed, retryable (a 503 for a single call).
    Fail,
    /// Left out of a batch's answer (a single call succeeds).
    Omit,
}

/// One request the service was sent, alone or in a batch.
#[derive(Debug, Clone)]
pub struct Item {
    /// When the call carrying it arrived.
    pub at: DateTime<Utc>,
    /// The call's body for this request (for a batch: its element).
    pub body: Value,
    /// Whether it came in a batch.
    pub batched: bool,
    pub signature_ok: bool,
}

type Decide = Arc<dyn Fn(&Value) -> Answer + Send + Sync>;

#[derive(Clone)]
struct ServiceState {
    decide: Decide,
    max_delay: Duration,
    items: Arc<Mutex<Vec<Item>>>,
    posts: Arc<Mutex<usize>>,
}

/// The service; `items()` is everything it was sent.
#[derive(Clone)]
pub struct FlowService {
    pub url: String,
    items: Arc<Mutex<Vec<Item>>>,
    posts: Arc<Mutex<usize>>,
}

impl FlowService {
    /// Answers each request with `decide(its body)` after up to `max_delay`.
    pub async fn start(
        max_delay: Duration,
        decide: impl Fn(&Value) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let state = ServiceState {
            decide: Arc::new(decide),
            max_delay,
            items: Arc::default(),
            posts: Arc::default(),
        };
        let (items, posts) = (state.items.clone(), state.posts.clone());
        let app = Router::new().route("/", post(answer)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, items, posts }
    }

    /// A service that erases everything at once.
    pub async fn ok() -> Self {
        Self::start(Duration::ZERO, |_| Answer::Succeed).await
    }

    pub fn items(&self) -> Vec<Item> {
        self.items.lock().unwrap().clone()
    }

    /// How many POSTs it received.
    pub fn posts(&self) -> usize {
        *self.posts.lock().unwrap()
    }
}

async fn answer(
    State(state): State<ServiceState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let at = Utc::now();
    let signature_ok = signature::verify(
        SECRET.as_bytes(),
        headers
            .get("lethe-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        &body,
        at.timestamp(),
        300,
    )
    .is_ok();
    *state.posts.lock().unwrap() += 1;
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let delay = state.max_delay.mul_f64(rand::random::<f64>());
    let batch = body.get("batch").and_then(Value::as_array).cloned();
    let elements = batch.clone().unwrap_or_else(|| vec![body.clone()]);
    state
        .items
        .lock()
        .unwrap()
        .extend(elements.iter().map(|element| Item {
            at,
            body: element.clone(),
            batched: batch.is_some(),
            signature_ok,
        }));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(batch) = batch else {
        return match (state.decide)(&body) {
            Answer::Fail => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Answer::Succeed | Answer::Omit => Json(json!({"deleted": {"rows": 1}})).into_response(),
        };
    };
    let results: Vec<Value> = batch
        .iter()
        .filter_map(|element| {
            let status = match (state.decide)(element) {
                Answer::Omit => return None,
                Answer::Succeed => json!({"status": "succeeded", "deleted": {"rows": 1}}),
                Answer::Fail => json!({"status": "failed", "error": "busy", "retryable": true}),
            };
            let mut result = json!({
                "request_id": element["request_id"],
                "cleaner": element["cleaner"],
                "attempt": element["attempt"],
            });
            result
                .as_object_mut()
                .unwrap()
                .extend(status.as_object().unwrap().clone());
            Some(result)
        })
        .collect();
    Json(json!({ "results": results })).into_response()
}
