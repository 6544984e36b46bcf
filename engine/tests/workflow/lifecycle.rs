//! Whole lifecycles: timers, cancelling, holds, retries, skips, 202 cleaners and routing.

use super::*;

async fn full_lifecycle(store: TestStore) {
    let notifier = FakeService::start(&[]).await;
    let billing = FakeService::start(&[]).await;
    let crm = FakeService::start(&[]).await;
    let config = config("2s")
        .reminders(&["1s"])
        .notifier(&notifier.url, Some(SECRET), None)
        .cleaner(cleaner("billing", &billing.url))
        .cleaner(cleaner("crm", &crm.url));
    let engine = Engine::start(store, config).await;
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

    let reminders = reminder_calls(&notifier);
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
    let config = config("1s").cleaner(cleaner("billing", &billing.url));
    let engine = Engine::start(store, config).await;
    let id = engine.submit("7", "gdpr").await;
    let token = engine.key.cancel_token(id);
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
    let config = config("1s").cleaner(cleaner("billing", &billing.url));
    let engine = Engine::start(store, config).await;
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
    let config = config("1s").cleaner(cleaner("flaky", &flaky.url));
    let engine = Engine::start(store, config).await;
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
    let config = config("1s").cleaner(cleaner("strict", &strict.url));
    let engine = Engine::start(store, config).await;
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
            serde_json::json!({"reason": "the service's schema is fixed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(10))
        .await;
    assert_eq!(strict.calls().len(), 2);
    assert_eq!(strict.calls()[1].body["attempt"], 2);
    assert_eq!(count(&loaded.events, "CleanerRetried"), 1);
    let retried = loaded
        .events
        .iter()
        .find(|e| e.event_type == "CleanerRetried")
        .unwrap();
    assert_eq!(retried.payload["reason"], "the service's schema is fixed");
    engine.stop().await;
}

async fn skipping_a_cleaner_with_a_reason_completes(store: TestStore) {
    let broken = FakeService::start(&[400]).await;
    let config = config("1s").cleaner(cleaner("broken", &broken.url));
    let engine = Engine::start(store, config).await;
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
    let config = config("1s").cleaner(cleaner("later", &async_cleaner.url).callback_timeout("30s"));
    let engine = Engine::start(store, config).await;
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
    let config = config("1s")
        .cleaner(cleaner("everyone", &everyone.url))
        .cleaner(cleaner("eu", &eu_only.url).jurisdictions(&["gdpr"]))
        .cleaner(cleaner("us", &us_only.url).jurisdictions(&["ccpa"]));
    let engine = Engine::start(store, config).await;
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
    let config = config("1s").cleaner(cleaner("billing", &billing.url));
    let engine = Engine::start(store, config).await;
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

/// The shared harness as a new test uses it: a cleaner given as raw TOML lines, a request
/// submitted over HTTP and expedited past its month-long grace period, a wait on its status.
async fn a_request_submitted_over_http_and_expedited_completes(store: TestStore) {
    let crm = FakeService::start(&[]).await;
    let config = TestConfig::new()
        .grace("30d")
        .poll_interval("50ms")
        .cleaner(Cleaner::raw(
            "crm",
            "http",
            &format!("url = \"{}\"\nsecret = \"{SECRET}\"", crm.url),
        ));
    let engine = TestEngine::spawn(&store, config).await;
    let id = engine.submit_due(&[("email", "a@example.com")]).await;
    let loaded = engine
        .wait_for(id, RequestStatus::Completed, Duration::from_secs(15))
        .await;
    assert_eq!(count(&loaded.events, "CleanerSucceeded"), 1);
    let calls = crm.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].signature_ok);
    assert_eq!(calls[0].body["subject"]["email"], "a@example.com");
    let (status, view) = engine.get(&format!("/v1/requests/{id}")).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("completed")));
    engine.stop().await;
}

support::backends!(
    a_request_submitted_over_http_and_expedited_completes,
    full_lifecycle,
    cancel_during_grace_never_calls_cleaners,
    hold_delays_due_until_release,
    flaky_cleaner_is_retried_with_growing_delays,
    non_retryable_failure_needs_attention_then_admin_retry_completes,
    skipping_a_cleaner_with_a_reason_completes,
    accepted_cleaner_calls_back_once,
    routing_rules_select_cleaners,
    all_events_have_single_due_and_completed,
);
