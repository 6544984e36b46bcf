//! The workflow end to end, in-process, on real databases with real HTTP cleaners and a real
//! notifier on 127.0.0.1: timers move requests from Received through reminders to Due, the
//! saga calls every planned cleaner with a valid signature and retries failures with backoff,
//! and admin operations steer what needs a person. Durations are seconds or less so whole
//! lifecycles run in seconds; every wait polls a condition with a deadline.

#[path = "../support/mod.rs"]
mod support;

mod lifecycle;
mod operations;
mod pacing;
mod reminders;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_domain::{RequestId, RequestStatus};
use lethe_engine::app::{LoadedRequest, Requests, Submission};
use lethe_engine::http::{router, AppState};
use lethe_engine::root::Runtime;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{Checkpoint, EventStore, RecordedEvent};
use lethe_engine::workflow::WorkflowStore;
use support::config::{Cleaner, TestConfig};
use support::fake_service::{FakeService, SECRET};
use support::TestStore;

/// An engine running in this process: the workflow runtime plus the HTTP API on a port.
struct Engine {
    requests: Requests,
    events: Arc<dyn EventStore>,
    workflow: Arc<dyn WorkflowStore>,
    base: String,
    runtime: Option<Runtime>,
    _store: TestStore,
}

impl Engine {
    async fn start(store: TestStore, config: TestConfig) -> Self {
        let config = Arc::new(config.build());
        let (events, workflow) = store.stores();
        let key = MasterKey::from_bytes([9; 32]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Requests::new(events.clone(), config.clone());
        let runtime = Runtime::start(
            requests.clone(),
            workflow.clone(),
            config,
            key.clone(),
            base.clone(),
        )
        .unwrap();
        let app = router(AppState {
            requests: requests.clone(),
            key,
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            requests,
            events,
            workflow,
            base,
            runtime: Some(runtime),
            _store: store,
        }
    }

    async fn submit(&self, subject: &str, jurisdiction: &str) -> RequestId {
        let submission = Submission {
            subject: BTreeMap::from([("user_id".to_owned(), subject.to_owned())]),
            jurisdiction: Some(jurisdiction.to_owned()),
            ..Submission::default()
        };
        self.requests
            .submit(submission, None, "test")
            .await
            .unwrap()
            .loaded
            .request
            .id
    }

    async fn load(&self, id: RequestId) -> LoadedRequest {
        self.requests.load(id).await.unwrap().unwrap()
    }

    async fn status(&self, id: RequestId) -> RequestStatus {
        self.load(id).await.request.status()
    }

    /// Waits until the request has this status (at most `within`).
    async fn wait_for(
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
                types(&loaded.events)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the saga has removed every job of the request but its shredding.
    async fn wait_for_no_jobs(&self, id: RequestId) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut jobs = self.workflow.jobs_of(id).await.unwrap();
            jobs.retain(|j| j.kind != lethe_engine::workflow::JobKind::Shred);
            if jobs.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "jobs left for {id}: {jobs:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_as(None, path, body).await
    }

    async fn post_as(
        &self,
        token: Option<&str>,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    async fn all_events(&self) -> Vec<RecordedEvent> {
        self.events
            .read_all(Checkpoint::START, 10_000)
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.stop().await;
        }
    }
}

fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

fn count(events: &[RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// Waits until `check` holds (at most `within`).
async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Timers fast enough for whole lifecycles in seconds: the grace period given, no reminders,
/// workers looking for work every 50 ms.
fn config(grace: &str) -> TestConfig {
    TestConfig::new()
        .grace(grace)
        .no_reminders()
        .poll_interval("50ms")
        .lease("5s")
}

/// An HTTP cleaner answering within 2 s, tried 4 times with backoff from 300 ms to 2 s.
fn cleaner(name: &str, url: &str) -> Cleaner {
    Cleaner::http(name, url)
        .timeout("2s")
        .retry(4, "300ms", "2s", 2.0)
}
