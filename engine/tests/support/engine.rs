//! An engine running in the test's process the way `lethe serve` runs it: the master key
//! opened on the database's key ring, the application service with projections and sealing,
//! the workflow (saga, projections, Kafka relay when configured, timers, dispatch) and the
//! HTTP API on a port of 127.0.0.1.
//!
//! ```ignore
//! let engine = TestEngine::spawn(&store, TestConfig::new().cleaner(Cleaner::manual("desk"))).await;
//! let id = engine.submit_due(&[("user_id", "42")]).await;
//! engine.wait_for(id, RequestStatus::Completed, Duration::from_secs(30)).await;
//! engine.stop().await;
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lethe_domain::{RequestId, RequestStatus};
use lethe_engine::app::{LoadedRequest, Requests};
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::root::{Database, Runtime};
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{key_ring, Checkpoint, RecordedEvent};
use lethe_engine::workflow::Job;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::TestConfig;
use super::TestStore;

/// How long [`TestEngine::stop`] waits for the HTTP server to finish its requests in flight.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// The engine's master key in tests.
pub const MASTER_KEY: [u8; 32] = [0x5e; 32];

/// How [`TestEngine`] wires the application service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// As `lethe serve`: projections, and subjects sealed under the master key (a subject
    /// with an open request is answered with that request).
    Serve,
    /// The log alone: no projections, subjects stored as submitted.
    Plain,
}

/// One engine in this process; [`TestEngine::stop`] ends it cleanly.
#[derive(Debug)]
pub struct TestEngine {
    /// `http://127.0.0.1:<port>`, also the engine's public URL (cleaners' callbacks).
    pub base: String,
    pub client: reqwest::Client,
    pub requests: Requests,
    pub database: Database,
    pub key: MasterKey,
    pub store: TestStore,
    runtime: Option<Runtime>,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
}

impl TestEngine {
    /// Spawns an engine on `store` with `config`, wired as `lethe serve`.
    pub async fn spawn(store: &TestStore, config: TestConfig) -> Self {
        Self::spawn_with(store, Arc::new(config.build()), Wiring::Serve).await
    }

    /// Spawns an engine on `store` with a configuration already read, wired as told.
    pub async fn spawn_with(store: &TestStore, config: Arc<Config>, wiring: Wiring) -> Self {
        let database = store.database();
        let key = MasterKey::from_bytes(MASTER_KEY);
        let requests = match wiring {
            Wiring::Serve => {
                key_ring::open(database.keys.as_ref(), &key)
                    .await
                    .expect("the test's master key opens the database's key ring");
                database.app(config.clone(), Some(key.clone()))
            }
            Wiring::Plain => Requests::new(database.events.clone(), config.clone()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let runtime = Runtime::start(
            requests.clone(),
            database.workflow.clone(),
            config,
            key.clone(),
            base.clone(),
        )
        .unwrap_or_else(|e| panic!("the engine does not start: {e}"));
        let app = router(AppState {
            requests: requests.clone(),
            key: key.clone(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(lethe_engine::http::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            requests,
            database,
            key,
            store: store.clone(),
            runtime: Some(runtime),
            server: Some((stop, server)),
        }
    }

    /// The engine's HTTP API as a router, for calls in-process (`tower::ServiceExt::oneshot`)
    /// on the same application service as its port.
    pub fn router(&self) -> axum::Router {
        router(AppState {
            requests: self.requests.clone(),
            key: self.key.clone(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST path` with a JSON body: the status and the JSON answered (`Null` if none).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_as(None, path, body).await
    }

    /// [`Self::post`] with a bearer token, if given.
    pub async fn post_as(&self, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request).await
    }

    /// `GET path`: the status and the JSON answered (`Null` if none).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.client.get(self.url(path))).await
    }

    /// Submits `{"subject": {kind: value, ...}}` over HTTP; the new request's id.
    pub async fn submit(&self, subject: &[(&str, &str)]) -> RequestId {
        let subject: BTreeMap<&str, &str> = subject.iter().copied().collect();
        self.submit_json(serde_json::json!({ "subject": subject }))
            .await
    }

    /// Submits this body over HTTP (`jurisdiction`, `tags`, ...); the request's id.
    pub async fn submit_json(&self, body: Value) -> RequestId {
        let (status, answer) = self.post("/v1/requests", body).await;
        assert!(
            status == 201 || status == 200,
            "submitting: {status} {answer}"
        );
        serde_json::from_value(answer["id"].clone())
            .unwrap_or_else(|e| panic!("no request id in {answer}: {e}"))
    }

    /// Submits over HTTP and expedites: the request is due at once, its grace period skipped.
    pub async fn submit_due(&self, subject: &[(&str, &str)]) -> RequestId {
        let id = self.submit(subject).await;
        self.expedite(id).await;
        id
    }

    /// `POST /v1/requests/{id}/expedite`: due now.
    pub async fn expedite(&self, id: RequestId) {
        let (status, answer) = self
            .post(
                &format!("/v1/requests/{id}/expedite"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 200, "expediting {id}: {answer}");
    }

    pub async fn load(&self, id: RequestId) -> LoadedRequest {
        self.requests
            .load(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no request {id}"))
    }

    pub async fn status(&self, id: RequestId) -> RequestStatus {
        self.load(id).await.request.status()
    }

    /// Waits until the request has this status (at most `within`); fails naming its status
    /// and events if it does not.
    pub async fn wait_for(
        &self,
        id: RequestId,
        status: RequestStatus,
        within: Duration,
    ) -> LoadedRequest {
        let deadline = Instant::now() + within;
        loop {
            let loaded = self.load(id).await;
            if loaded.request.status() == status {
                return loaded;
            }
            assert!(
                Instant::now() < deadline,
                "request {id} is {} after {within:?}, not {status}; events: {:?}",
                loaded.request.status(),
                loaded
                    .events
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The workflow's jobs for the request.
    pub async fn jobs(&self, id: RequestId) -> Vec<Job> {
        self.database.workflow.jobs_of(id).await.unwrap()
    }

    /// Waits until the request has a failed cleaner attempt (at most `within`) and returns
    /// the first, having checked that it is retryable and that its error names none of
    /// `identifiers`.
    pub async fn first_retryable_failure(
        &self,
        id: RequestId,
        within: Duration,
        identifiers: &[&str],
    ) -> RecordedEvent {
        let failure = eventually(within, "a failed attempt", || async {
            let events = self.load(id).await.events;
            events.into_iter().find(|e| e.event_type == "CleanerFailed")
        })
        .await;
        assert_eq!(failure.payload["retryable"], true, "{}", failure.payload);
        let error = failure.payload["error"].as_str().unwrap_or_default();
        for identifier in identifiers {
            assert!(!error.contains(identifier), "{identifier} in {error}");
        }
        failure
    }

    /// Every event of the log (up to 10,000).
    pub async fn all_events(&self) -> Vec<RecordedEvent> {
        self.database
            .events
            .read_all(Checkpoint::START, 10_000)
            .await
            .unwrap()
    }

    /// Stops as `lethe serve` does: the HTTP server finishes its requests in flight, then the
    /// workflow's tasks stop (cleaner calls in flight finish first).
    pub async fn stop(mut self) {
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            let stopped = tokio::time::timeout(STOP_DEADLINE, server).await;
            let stopped = stopped
                .unwrap_or_else(|_| panic!("the HTTP server runs on after {STOP_DEADLINE:?}"));
            stopped.unwrap().unwrap();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.stop().await;
        }
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Waits until `check` gives a value (at most `within`); fails naming `what` if it does not.
pub async fn eventually<T, F>(within: Duration, what: &str, mut check: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
