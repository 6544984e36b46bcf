//! The workflow end to end, in-process, on real databases with real HTTP cleaners and a real
//! notifier on 127.0.0.1: timers move requests from Received through reminders to Due, the
//! saga calls every planned cleaner with a valid signature and retries failures with backoff,
//! and admin operations steer what needs a person. Durations are seconds or less so whole
//! lifecycles run in seconds; every wait polls a condition with a deadline.

#[path = "../support/mod.rs"]
mod support;

mod coverage;
mod lifecycle;
mod operations;
mod pacing;
mod receipts;
mod reminders;

use std::collections::BTreeMap;
use std::ops::Deref;
use std::time::{Duration, Instant};

use lethe_domain::{RequestId, RequestStatus};
use lethe_engine::app::Submission;
use lethe_engine::store::RecordedEvent;
use support::config::{Cleaner, TestConfig};
use support::engine::TestEngine;
use support::fake_service::{FakeService, SECRET};
use support::TestStore;

/// An engine running in this process (the workflow runtime plus the HTTP API on a port), with
/// this binary's own ways to submit and wait.
struct Engine(TestEngine);

impl Deref for Engine {
    type Target = TestEngine;

    fn deref(&self) -> &TestEngine {
        &self.0
    }
}

impl Engine {
    async fn start(store: TestStore, config: TestConfig) -> Self {
        Self(TestEngine::spawn(&store, config).await)
    }

    /// Submits in-process, for a subject `user_id` in `jurisdiction`.
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

    /// Waits until the saga has removed every job of the request but its shredding.
    async fn wait_for_no_jobs(&self, id: RequestId) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut jobs = self.jobs(id).await;
            jobs.retain(|j| j.kind != lethe_engine::workflow::JobKind::Shred);
            if jobs.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "jobs left for {id}: {jobs:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

fn count(events: &[RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// The reminders the notifier received (it is also told of completions, with their receipts).
fn reminder_calls(notifier: &FakeService) -> Vec<support::fake_service::Call> {
    notifier
        .calls()
        .into_iter()
        .filter(|c| c.body["type"] != "completed")
        .collect()
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
