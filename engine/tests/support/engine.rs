#![allow(dead_code)] // each test binary uses a different part of this module

//! An engine running in this process on a test store: the workflow runtime (timers, saga,
//! dispatch) with its cleaners, and the application service to submit and read requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_domain::{RequestId, RequestStatus};
use lethe_engine::app::{LoadedRequest, Requests, Submission};
use lethe_engine::root::Runtime;
use lethe_engine::store::master_key::MasterKey;

use crate::support::config::TestConfig;
use crate::support::TestStore;

pub struct Engine {
    pub requests: Requests,
    runtime: Option<Runtime>,
    _store: TestStore,
}

impl Engine {
    pub async fn start(store: TestStore, config: &TestConfig) -> Self {
        let config = Arc::new(config.build());
        let (events, workflow) = store.stores();
        let requests = Requests::new(events, config.clone());
        let runtime = Runtime::start(
            requests.clone(),
            workflow,
            config,
            MasterKey::from_bytes([9; 32]),
            "http://127.0.0.1:9".to_owned(),
        )
        .unwrap();
        Self {
            requests,
            runtime: Some(runtime),
            _store: store,
        }
    }

    /// Submits one request per subject, all at once; their ids in order.
    pub async fn submit_all(&self, subjects: Vec<BTreeMap<String, String>>) -> Vec<RequestId> {
        let mut ids = Vec::new();
        for chunk in subjects.chunks(500) {
            let submissions = chunk
                .iter()
                .map(|subject| Submission {
                    subject: subject.clone(),
                    jurisdiction: Some("gdpr".to_owned()),
                    ..Submission::default()
                })
                .collect();
            for submitted in self.requests.submit_many(submissions, "test").await {
                ids.push(submitted.unwrap().loaded.request.id);
            }
        }
        ids
    }

    pub async fn load(&self, id: RequestId) -> LoadedRequest {
        self.requests.load(id).await.unwrap().unwrap()
    }

    /// Waits until every request is completed (at most `within`); returns them as loaded.
    pub async fn wait_completed(&self, ids: &[RequestId], within: Duration) -> Vec<LoadedRequest> {
        let deadline = Instant::now() + within;
        loop {
            let loaded = self.requests.load_many(ids).await.unwrap();
            let open: Vec<&LoadedRequest> = loaded
                .values()
                .filter(|l| l.request.status() != RequestStatus::Completed)
                .collect();
            if open.is_empty() {
                return ids.iter().map(|id| loaded[id].clone()).collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} requests not completed after {within:?}; one is {}: {:?}",
                open.len(),
                ids.len(),
                open[0].request.status(),
                open[0]
                    .events
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.stop().await;
        }
    }
}

/// `{"user_id": id}`.
pub fn user(id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("user_id".to_owned(), id.to_owned())])
}
