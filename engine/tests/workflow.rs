//! The workflow end to end, in-process, on real databases with real HTTP cleaners and a real
//! notifier on 127.0.0.1: timers move requests from Received through reminders to Due, the
//! saga calls every planned cleaner with a valid signature and retries failures with backoff,
//! and admin operations steer what needs a person. Durations are seconds or less so whole
//! lifecycles run in seconds; every wait polls a condition with a deadline.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_domain::{RequestId, RequestStatus};
use lethe_engine::app::{LoadedRequest, Requests, Submission};
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::root::Runtime;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{Checkpoint, EventStore, RecordedEvent};
use lethe_engine::workflow::WorkflowStore;
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
    async fn start(store: TestStore, config: &str) -> Self {
        let config = Arc::new(Config::parse(config).unwrap());
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
        );
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

fn engine_section() -> &'static str {
    "[engine]\npoll_interval = \"50ms\"\nlease = \"5s\"\n"
}

fn cleaner(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[cleaners]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout = \"2s\"\n\
         retry = {{ max_attempts = 4, initial = \"300ms\", max = \"2s\", multiplier = 2.0 }}\n{extra}\n"
    )
}

async fn full_lifecycle(store: TestStore) {
    let notifier = FakeService::start(&[]).await;
    let billing = FakeService::start(&[]).await;
    let crm = FakeService::start(&[]).await;
    let config = format!(
        "[policy]\ngrace_period = \"2s\"\nreminders = [\"1s\"]\n{}\n[notifier]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n{}{}",
        engine_section(),
        notifier.url,
        cleaner("billing", &billing.url, ""),
        cleaner("crm", &crm.url, ""),
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("42", "gdpr").await;
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(15))
        .await;
    let kinds = types(&loaded.events);
    assert_eq!(kinds[..3], ["Received", "ReminderSent", "Due"]);
    assert_eq!(kinds.last(), Some(&"Completed"));
    assert_eq!(count(&loaded.events, "CleanerSucceeded"), 2);
    // The Due came no earlier than the end of the grace period.
    let due = loaded
        .events
        .iter()
        .find(|e| e.event_type == "Due")
        .unwrap();
    assert!(due.recorded_at >= loaded.request.due_at);

    let reminders = notifier.calls();
    assert_eq!(reminders.len(), 1, "the notifier got one reminder");
    assert!(reminders[0].signature_ok);
    assert_eq!(reminders[0].body["request_id"], id.to_string());
    assert_eq!(reminders[0].idempotency_key, format!("{id}:reminder:0"));
    assert_eq!(
        reminders[0].body["cancel_token"].as_str().unwrap().len(),
        64
    );

    for service in [&billing, &crm] {
        let calls = service.calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert!(
            call.signature_ok,
            "the signature verifies with the cleaner's secret"
        );
        assert_eq!(call.body["request_id"], id.to_string());
        assert_eq!(call.body["attempt"], 1);
        assert_eq!(call.body["subject"]["user_id"], "42");
        assert!(call.idempotency_key.starts_with(&id.to_string()));
        assert!(call.body["callback_url"]
            .as_str()
            .unwrap()
            .ends_with("/result"));
    }
    engine.wait_for_no_jobs(id).await;

    reqwest::get(format!("{}/healthz", engine.base))
        .await
        .unwrap();
    let metrics = reqwest::get(format!("{}/metrics", engine.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "lethe_events_appended_total{type=\"Received\"}",
        "lethe_events_appended_total{type=\"Completed\"}",
        "lethe_cleaner_attempts_total{cleaner=\"billing\",kind=\"http\",outcome=\"succeeded\"}",
        "lethe_cleaner_call_duration_seconds_bucket{cleaner=\"crm\",kind=\"http\"",
        "lethe_subscription_lag_events{subscription=\"saga\"}",
        "lethe_subscription_lag_seconds{subscription=\"saga\"}",
        "lethe_jobs_pending{kind=\"dispatch\"}",
        "lethe_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"}",
        "lethe_http_request_duration_seconds_bucket{route=\"/healthz\"",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from /metrics:\n{metrics}"
        );
    }
    engine.stop().await;
}

async fn cancel_during_grace_never_calls_cleaners(store: TestStore) {
    let billing = FakeService::start(&[]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("billing", &billing.url, "")
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("7", "gdpr").await;
    let token = MasterKey::from_bytes([9; 32]).cancel_token(id);
    let (status, _) = engine
        .post(
            &format!("/v1/requests/{id}/cancel?token=wrong"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/cancel?token={token}"),
            serde_json::json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    // A request submitted after it becomes due, proving the workers were running all along.
    let other = engine.submit("8", "gdpr").await;
    engine
        .wait_for(other, RequestStatus::Completed, Duration::from_secs(10))
        .await;
    let cancelled = engine.load(id).await;
    assert_eq!(types(&cancelled.events), ["Received", "Cancelled"]);
    assert!(billing
        .calls()
        .iter()
        .all(|c| c.body["request_id"] != id.to_string()));
    engine.wait_for_no_jobs(id).await;
    // Too late to cancel once due.
    let (status, _) = engine
        .post(
            &format!("/v1/requests/{other}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 409);
    engine.stop().await;
}

async fn hold_delays_due_until_release(store: TestStore) {
    let billing = FakeService::start(&[]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("billing", &billing.url, "")
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("9", "gdpr").await;
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/hold"),
            serde_json::json!({"reason": "litigation"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Another request passes through Due meanwhile: the timers ran, this one stayed held.
    let witness = engine.submit("10", "gdpr").await;
    engine
        .wait_for(witness, RequestStatus::Completed, Duration::from_secs(10))
        .await;
    assert_eq!(engine.status(id).await, RequestStatus::OnHold);
    assert_eq!(count(&engine.load(id).await.events, "Due"), 0);
    let (status, _) = engine
        .post(&format!("/v1/requests/{id}/release"), serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(10))
        .await;
    let kinds = types(&loaded.events);
    let released = kinds.iter().position(|t| *t == "HoldReleased").unwrap();
    let due = kinds.iter().position(|t| *t == "Due").unwrap();
    assert!(released < due, "{kinds:?}");
    engine.stop().await;
}

async fn flaky_cleaner_is_retried_with_growing_delays(store: TestStore) {
    let flaky = FakeService::start(&[503, 503]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("flaky", &flaky.url, "")
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("11", "gdpr").await;
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(15))
        .await;
    let calls = flaky.calls();
    assert_eq!(calls.len(), 3, "exactly three attempts");
    assert_eq!(
        calls
            .iter()
            .map(|c| c.body["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(calls
        .iter()
        .all(|c| c.idempotency_key == calls[0].idempotency_key));
    let first_gap = calls[1].at - calls[0].at;
    let second_gap = calls[2].at - calls[1].at;
    // Backoff: 300 ms then 600 ms, each jittered into its upper half.
    assert!(first_gap >= Duration::from_millis(150), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(300), "{second_gap:?}");
    assert!(
        second_gap > first_gap.mul_f64(0.9),
        "{first_gap:?} then {second_gap:?}"
    );
    assert_eq!(count(&loaded.events, "CleanerFailed"), 2);
    engine.stop().await;
}

async fn non_retryable_failure_needs_attention_then_admin_retry_completes(store: TestStore) {
    let strict = FakeService::start(&[400]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("strict", &strict.url, "")
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("12", "gdpr").await;
    let loaded = engine
        .wait_for(id, RequestStatus::NeedsAttention, Duration::from_secs(10))
        .await;
    assert_eq!(strict.calls().len(), 1, "a 400 is not retried");
    let failed = loaded
        .events
        .iter()
        .find(|e| e.event_type == "CleanerFailed")
        .unwrap();
    assert_eq!(failed.payload["exhausted"], true);
    assert_eq!(failed.payload["status_code"], 400);
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/cleaners/strict/retry"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(10))
        .await;
    assert_eq!(strict.calls().len(), 2);
    assert_eq!(strict.calls()[1].body["attempt"], 2);
    assert_eq!(count(&loaded.events, "CleanerRetried"), 1);
    engine.stop().await;
}

async fn skipping_a_cleaner_with_a_reason_completes(store: TestStore) {
    let broken = FakeService::start(&[400]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("broken", &broken.url, "")
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("13", "gdpr").await;
    engine
        .wait_for(id, RequestStatus::NeedsAttention, Duration::from_secs(10))
        .await;
    let (status, _) = engine
        .post(
            &format!("/v1/requests/{id}/cleaners/broken/skip"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 400, "a skip needs a reason");
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/cleaners/broken/skip"),
            serde_json::json!({"reason": "system decommissioned; no data left"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    let loaded = engine.load(id).await;
    let kinds = types(&loaded.events);
    assert_eq!(kinds[kinds.len() - 2..], ["CleanerSkipped", "Completed"]);
    engine.stop().await;
}

async fn accepted_cleaner_calls_back_once(store: TestStore) {
    let async_cleaner = FakeService::start(&[202]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("later", &async_cleaner.url, "callback_timeout = \"30s\"")
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("14", "gdpr").await;
    eventually(Duration::from_secs(10), "the cleaner is called", || {
        !async_cleaner.calls().is_empty()
    })
    .await;
    let callback = async_cleaner.calls()[0].body["callback_url"]
        .as_str()
        .unwrap()
        .to_owned();
    // The engine waits for the callback: still due.
    assert_eq!(engine.status(id).await, RequestStatus::Due);
    let path = callback.strip_prefix(&engine.base).unwrap().to_owned();
    let result = serde_json::json!({"attempt": 1, "outcome": "succeeded", "deleted": {"rows": 3}});
    let (status, body) = engine.post(&path, result.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    let (status, _) = engine.post(&path, result).await;
    assert_eq!(
        status, 200,
        "a duplicate callback is accepted and changes nothing"
    );
    let loaded = engine.load(id).await;
    assert_eq!(count(&loaded.events, "CleanerSucceeded"), 1);
    assert_eq!(count(&loaded.events, "Completed"), 1);
    assert_eq!(async_cleaner.calls().len(), 1);
    engine.stop().await;
}

async fn routing_rules_select_cleaners(store: TestStore) {
    let everyone = FakeService::start(&[]).await;
    let eu_only = FakeService::start(&[]).await;
    let us_only = FakeService::start(&[]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}{}{}",
        engine_section(),
        cleaner("everyone", &everyone.url, ""),
        cleaner("eu", &eu_only.url, "match = { jurisdictions = [\"gdpr\"] }"),
        cleaner("us", &us_only.url, "match = { jurisdictions = [\"ccpa\"] }"),
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("15", "ccpa").await;
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(10))
        .await;
    assert_eq!(everyone.calls().len(), 1);
    assert_eq!(us_only.calls().len(), 1);
    assert_eq!(
        eu_only.calls().len(),
        0,
        "a gdpr-only cleaner never hears of a ccpa request"
    );
    let due = loaded
        .events
        .iter()
        .find(|e| e.event_type == "Due")
        .unwrap();
    let planned: Vec<_> = due.payload["cleaners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(planned, ["everyone", "us"]);
    engine.stop().await;
}

async fn all_events_have_single_due_and_completed(store: TestStore) {
    let billing = FakeService::start(&[503]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("billing", &billing.url, "")
    );
    let engine = Engine::start(store, &config).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(engine.submit(&format!("bulk-{n}"), "gdpr").await);
    }
    for id in &ids {
        engine
            .wait_for(*id, RequestStatus::Completed, Duration::from_secs(20))
            .await;
    }
    let events = engine.all_events().await;
    for id in &ids {
        let mine: Vec<_> = events
            .iter()
            .filter(|e| e.stream_id == *id)
            .cloned()
            .collect();
        assert_eq!(count(&mine, "Due"), 1);
        assert_eq!(count(&mine, "Completed"), 1);
    }
    engine.stop().await;
}

async fn callbacks_accept_only_the_cleaners_own_token(store: TestStore) {
    use lethe_engine::http::auth::token_hash;
    let async_cleaner = FakeService::start(&[202]).await;
    let tokens: String = [
        ("later", "tok-later", "cleaner:later"),
        ("other", "tok-other", "cleaner:other"),
        ("ops", "tok-admin", "admin"),
        ("reader", "tok-reader", "requests:read"),
    ]
    .iter()
    .map(|(name, token, scope)| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [\"{scope}\"]\n",
            token_hash(token)
        )
    })
    .collect();
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}{tokens}",
        engine_section(),
        cleaner("later", &async_cleaner.url, "callback_timeout = \"30s\""),
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("16", "gdpr").await;
    eventually(Duration::from_secs(10), "the cleaner is called", || {
        !async_cleaner.calls().is_empty()
    })
    .await;
    let path = format!("/v1/requests/{id}/cleaners/later/result");
    let result = serde_json::json!({"attempt": 1, "outcome": "succeeded"});
    for (token, expected) in [
        (None, 401),
        (Some("not-a-token"), 401),
        (Some("tok-other"), 403),
        (Some("tok-admin"), 403),
    ] {
        let (status, body) = engine.post_as(token, &path, result.clone()).await;
        assert_eq!(status, expected, "{token:?}: {body}");
        assert_eq!(
            engine.status(id).await,
            RequestStatus::Due,
            "a refused callback changes nothing"
        );
    }
    // Admin operations need the admin scope.
    let (status, _) = engine
        .post_as(
            Some("tok-reader"),
            &format!("/v1/requests/{id}/hold"),
            serde_json::json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = engine.post_as(Some("tok-later"), &path, result).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    let loaded = engine.load(id).await;
    let success = loaded
        .events
        .iter()
        .find(|e| e.event_type == "CleanerSucceeded")
        .unwrap();
    assert_eq!(success.actor, "cleaner:later");
    engine.stop().await;
}

async fn max_in_flight_bounds_concurrent_calls(store: TestStore) {
    let slow = FakeService::start_slow(Duration::from_millis(250)).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("slow", &slow.url, "max_in_flight = 1")
    );
    let engine = Engine::start(store, &config).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(engine.submit(&format!("slow-{n}"), "gdpr").await);
    }
    for id in &ids {
        engine
            .wait_for(*id, RequestStatus::Completed, Duration::from_secs(20))
            .await;
    }
    assert_eq!(slow.calls().len(), 4);
    assert_eq!(
        slow.max_concurrent(),
        1,
        "never more than max_in_flight calls at once"
    );
    engine.stop().await;
}

async fn rate_per_second_spaces_calls(store: TestStore) {
    let limited = FakeService::start(&[]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("limited", &limited.url, "rate_per_second = 2")
    );
    let engine = Engine::start(store, &config).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(engine.submit(&format!("rate-{n}"), "gdpr").await);
    }
    for id in &ids {
        engine
            .wait_for(*id, RequestStatus::Completed, Duration::from_secs(20))
            .await;
    }
    let calls = limited.calls();
    assert_eq!(calls.len(), 6);
    // A burst of 2, then one call per 500 ms: six calls span at least ~2 s.
    let span = calls.last().unwrap().at - calls[0].at;
    assert!(
        span >= Duration::from_millis(1800),
        "six calls within {span:?}"
    );
    engine.stop().await;
}

async fn a_closed_window_postpones_the_call_to_its_opening(store: TestStore) {
    let night = FakeService::start(&[]).await;
    let day = FakeService::start(&[]).await;
    let opens = chrono::Utc::now() + chrono::TimeDelta::hours(2);
    let closes = opens + chrono::TimeDelta::hours(1);
    let window = format!(
        "window = {{ start = \"{}\", end = \"{}\", tz = \"UTC\" }}",
        opens.format("%H:%M"),
        closes.format("%H:%M")
    );
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}{}",
        engine_section(),
        cleaner("night", &night.url, &window),
        cleaner("day", &day.url, ""),
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("17", "gdpr").await;
    engine
        .wait_for(id, RequestStatus::Due, Duration::from_secs(10))
        .await;
    // The request's one job for the first calls (ADR 10) calls the open cleaner and leaves
    // the closed one a job of its own for the window's opening.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = engine.workflow.jobs_of(id).await.unwrap();
        let postponed = jobs.iter().any(|j| {
            j.key == "night"
                && j.attempt == 1
                && j.run_at > chrono::Utc::now() + chrono::TimeDelta::minutes(100)
        });
        if postponed && jobs.len() == 1 && !day.calls().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dispatch was not postponed alone: {jobs:?}, {} calls of day",
            day.calls().len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(night.calls().is_empty(), "no call outside the window");
    assert_eq!(day.calls().len(), 1, "the open cleaner is called once");
    let loaded = engine.load(id).await;
    assert_eq!(count(&loaded.events, "CleanerSucceeded"), 1);
    assert_eq!(engine.status(id).await, RequestStatus::Due);
    engine.stop().await;
}

async fn due_makes_one_dispatch_job_for_all_first_calls(store: TestStore) {
    // Slow cleaners keep the job leased, so the test sees it before it is finished.
    let slow = Duration::from_millis(400);
    let (a, b, c) = (
        FakeService::start_slow(slow).await,
        FakeService::start_slow(slow).await,
        FakeService::start_slow(slow).await,
    );
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}{}{}",
        engine_section(),
        cleaner("a", &a.url, ""),
        cleaner("b", &b.url, ""),
        cleaner("c", &c.url, ""),
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("18", "gdpr").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let dispatch = loop {
        let jobs = engine.workflow.jobs_of(id).await.unwrap();
        let dispatch: Vec<_> = jobs
            .into_iter()
            .filter(|j| j.kind == lethe_engine::workflow::JobKind::Dispatch)
            .collect();
        if !dispatch.is_empty() {
            break dispatch;
        }
        assert!(Instant::now() < deadline, "no dispatch job appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        dispatch.len(),
        1,
        "one job, not one per cleaner: {dispatch:?}"
    );
    assert!(dispatch[0].key.is_empty() && dispatch[0].attempt == 1);
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(15))
        .await;
    for service in [&a, &b, &c] {
        assert_eq!(service.calls().len(), 1);
        assert_eq!(service.calls()[0].body["attempt"], 1);
    }
    assert_eq!(count(&loaded.events, "CleanerSucceeded"), 3);
    engine.wait_for_no_jobs(id).await;
    engine.stop().await;
}

async fn a_failing_notifier_is_retried_without_blocking_the_request(store: TestStore) {
    let notifier = FakeService::start(&[500, 500]).await;
    let config = format!(
        "[policy]\ngrace_period = \"7s\"\nreminders = [\"6s\"]\n{}[notifier]\nurl = \"{}\"\n",
        engine_section(),
        notifier.url,
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("18", "gdpr").await;
    // No cleaners: Due completes the request at once.
    engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(15))
        .await;
    eventually(
        Duration::from_secs(10),
        "the notifier is retried until it accepts",
        || notifier.calls().len() >= 3,
    )
    .await;
    let calls = notifier.calls();
    assert!(calls.iter().all(|c| c.body["request_id"] == id.to_string()));
    assert_eq!(calls.len(), 3, "no call after the notifier accepted");
    let loaded = engine.load(id).await;
    assert_eq!(count(&loaded.events, "ReminderSent"), 1);
    let sent = loaded
        .events
        .iter()
        .find(|e| e.event_type == "ReminderSent")
        .unwrap();
    assert_eq!(sent.payload["calls"], 3, "{:?}", sent.payload);
    engine.stop().await;
}

async fn a_missing_callback_times_out_into_a_retry(store: TestStore) {
    let forgetful = FakeService::start(&[202]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("forgetful", &forgetful.url, "callback_timeout = \"500ms\"")
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("19", "gdpr").await;
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(15))
        .await;
    let failed = loaded
        .events
        .iter()
        .find(|e| e.event_type == "CleanerFailed")
        .unwrap();
    assert!(failed.payload["error"]
        .as_str()
        .unwrap()
        .contains("callback_timeout"));
    assert_eq!(failed.payload["retryable"], true);
    assert_eq!(forgetful.calls().len(), 2);
    assert_eq!(forgetful.calls()[1].body["attempt"], 2);
    engine.stop().await;
}

async fn admin_operations_over_http(store: TestStore) {
    let billing = FakeService::start(&[]).await;
    let config = format!(
        "[policy]\ngrace_period = \"1h\"\nreminders = []\n{}{}",
        engine_section(),
        cleaner("billing", &billing.url, "")
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("20", "gdpr").await;
    let before = engine.load(id).await.request.deadline;

    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/extend"),
            serde_json::json!({"by": "1 month", "reason": "complex request"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let after: chrono::NaiveDate = serde_json::from_value(body["deadline"].clone()).unwrap();
    assert!(
        after > before + chrono::TimeDelta::days(27),
        "{before} -> {after}"
    );
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/extend"),
            serde_json::json!({"by": "2 months", "reason": "more"}),
        )
        .await;
    assert_eq!(status, 422, "beyond the maximum: {body}");
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/extend"),
            serde_json::json!({"by": "soon", "reason": "x"}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("by")));

    // Expedite: due now, though the grace period has an hour to run.
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/expedite"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(10))
        .await;
    let due = loaded
        .events
        .iter()
        .find(|e| e.event_type == "Due")
        .unwrap();
    assert_eq!(due.payload["expedited"], true);
    assert_eq!(billing.calls().len(), 1);

    let other = engine.submit("21", "gdpr").await;
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{other}/reject"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("reason")));
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{other}/reject"),
            serde_json::json!({"reason": "identity not verified"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "rejected");
    let (status, _) = engine
        .post(
            &format!("/v1/requests/{other}/hold"),
            serde_json::json!({"reason": "late"}),
        )
        .await;
    assert_eq!(status, 409, "nothing after a closed request");
    engine.wait_for_no_jobs(other).await;
    engine.stop().await;
}

async fn a_manual_cleaner_waits_for_a_person(store: TestStore) {
    let config = format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n{}\n[[cleaners]]\nname = \"archive\"\nkind = \"manual\"\n",
        engine_section(),
    );
    let engine = Engine::start(store, &config).await;
    let id = engine.submit("22", "gdpr").await;
    let loaded = engine
        .wait_for(id, RequestStatus::Due, Duration::from_secs(10))
        .await;
    // The dispatch job of a manual cleaner calls nothing and goes; the request waits.
    engine.wait_for_no_jobs(id).await;
    assert_eq!(engine.status(id).await, RequestStatus::Due);
    assert_eq!(types(&loaded.events), ["Received", "Due"]);
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/cleaners/archive/result"),
            serde_json::json!({"attempt": 1, "outcome": "succeeded", "detail": "3 boxes shredded"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    engine.stop().await;
}

/// A batch of job changes applies in order, even with the same job changed twice in it (the
/// store writes runs of one kind together and must cut them where a job repeats).
async fn job_changes_apply_in_order(store: TestStore) {
    use lethe_engine::workflow::{Job, JobChange, JobKind};
    let (_, workflow) = store.stores();
    let at = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let (a, b, c) = (
        RequestId::from_uuid(uuid::Uuid::now_v7()),
        RequestId::from_uuid(uuid::Uuid::now_v7()),
        RequestId::from_uuid(uuid::Uuid::now_v7()),
    );
    let job = |request_id, kind, key: &str, attempt, minutes| Job {
        request_id,
        kind,
        key: key.to_owned(),
        run_at: at + chrono::TimeDelta::minutes(minutes),
        attempt,
    };
    workflow
        .apply(&[
            JobChange::Upsert(job(a, JobKind::Dispatch, "billing", 1, 0)),
            JobChange::Upsert(job(a, JobKind::Dispatch, "billing", 2, 5)),
            // A lower attempt never winds the job back.
            JobChange::Upsert(job(a, JobKind::Dispatch, "billing", 1, 9)),
            JobChange::Upsert(job(a, JobKind::Dispatch, "search", 1, 1)),
            JobChange::Ensure(job(b, JobKind::Due, "", 0, 2)),
            JobChange::Ensure(job(b, JobKind::Due, "", 0, 7)),
            JobChange::Ensure(job(c, JobKind::Remind, "0", 0, 3)),
            JobChange::Ensure(job(c, JobKind::Due, "", 0, 4)),
            JobChange::Delete {
                request_id: a,
                kind: JobKind::Dispatch,
                key: "search".to_owned(),
                up_to_attempt: 1,
            },
            JobChange::DeleteAll { request_id: c },
            JobChange::Ensure(job(c, JobKind::Shred, "", 0, 8)),
        ])
        .await
        .unwrap();
    let kinds = |jobs: Vec<Job>| -> Vec<(JobKind, String, u32, i64)> {
        jobs.into_iter()
            .map(|j| (j.kind, j.key, j.attempt, (j.run_at - at).num_minutes()))
            .collect()
    };
    assert_eq!(
        kinds(workflow.jobs_of(a).await.unwrap()),
        [(JobKind::Dispatch, "billing".to_owned(), 2, 5)]
    );
    assert_eq!(
        kinds(workflow.jobs_of(b).await.unwrap()),
        [(JobKind::Due, String::new(), 0, 2)],
        "Ensure keeps the first"
    );
    assert_eq!(
        kinds(workflow.jobs_of(c).await.unwrap()),
        [
            (JobKind::Remind, "0".to_owned(), 0, 3),
            (JobKind::Shred, String::new(), 0, 8)
        ],
        "DeleteAll keeps a reminder's job: it ends by recording an outcome"
    );
}

macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::support::postgres().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::support::sqlite().await).await;
                }
            )*
        }
    };
}

#[path = "workflow/reminders.rs"]
mod reminders;
use reminders::*;

on_both!(
    a_reminder_is_recorded_sent_once_the_notifier_accepts,
    a_request_that_closes_before_the_notifier_accepts_records_its_reminder_not_sent,
    a_reminder_whose_lease_outlasts_the_grace_period_still_ends_in_an_outcome,
    a_crash_during_the_notifier_call_records_nothing_until_a_call_is_accepted,
    without_a_notifier_or_while_on_hold_a_reminder_is_recorded_not_sent,
    a_reminded_event_of_an_older_version_is_delivered_or_left_as_it_was,
    full_lifecycle,
    cancel_during_grace_never_calls_cleaners,
    hold_delays_due_until_release,
    flaky_cleaner_is_retried_with_growing_delays,
    non_retryable_failure_needs_attention_then_admin_retry_completes,
    skipping_a_cleaner_with_a_reason_completes,
    accepted_cleaner_calls_back_once,
    routing_rules_select_cleaners,
    all_events_have_single_due_and_completed,
    callbacks_accept_only_the_cleaners_own_token,
    max_in_flight_bounds_concurrent_calls,
    rate_per_second_spaces_calls,
    a_closed_window_postpones_the_call_to_its_opening,
    due_makes_one_dispatch_job_for_all_first_calls,
    a_failing_notifier_is_retried_without_blocking_the_request,
    a_missing_callback_times_out_into_a_retry,
    admin_operations_over_http,
    a_manual_cleaner_waits_for_a_person,
    job_changes_apply_in_order,
);
