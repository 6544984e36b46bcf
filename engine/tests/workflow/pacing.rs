//! Callback tokens, and how calls are paced: in flight, per second, windows, one dispatch job.

use super::*;

async fn callbacks_accept_only_the_cleaners_own_token(store: TestStore) {
    use lethe_engine::http::auth::token_hash;
    let async_cleaner = FakeService::start(&[202]).await;
    let mut config =
        config("1s").cleaner(cleaner("later", &async_cleaner.url).callback_timeout("30s"));
    for (name, token, scope) in [
        ("later", "tok-later", "cleaner:later"),
        ("other", "tok-other", "cleaner:other"),
        ("ops", "tok-admin", "admin"),
        ("reader", "tok-reader", "requests:read"),
    ] {
        config = config.token(name, &token_hash(token), &[scope]);
    }
    let engine = Engine::start(store, config).await;
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
    let config = config("1s").cleaner(cleaner("slow", &slow.url).max_in_flight(1));
    let engine = Engine::start(store, config).await;
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
    let config = config("1s").cleaner(cleaner("limited", &limited.url).rate_per_second(2.0));
    let engine = Engine::start(store, config).await;
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
    let (start, end) = (
        opens.format("%H:%M").to_string(),
        closes.format("%H:%M").to_string(),
    );
    let config = config("1s")
        .cleaner(cleaner("night", &night.url).window(&start, &end, "UTC"))
        .cleaner(cleaner("day", &day.url));
    let engine = Engine::start(store, config).await;
    let id = engine.submit("17", "gdpr").await;
    engine
        .wait_for(id, RequestStatus::Due, Duration::from_secs(10))
        .await;
    // The request's one job for the first calls (ADR 10) calls the open cleaner and leaves
    // the closed one a job of its own for the window's opening.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = engine.jobs(id).await;
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
    let config = config("1s")
        .cleaner(cleaner("a", &a.url))
        .cleaner(cleaner("b", &b.url))
        .cleaner(cleaner("c", &c.url));
    let engine = Engine::start(store, config).await;
    let id = engine.submit("18", "gdpr").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let dispatch = loop {
        let jobs = engine.jobs(id).await;
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

support::backends!(
    callbacks_accept_only_the_cleaners_own_token,
    max_in_flight_bounds_concurrent_calls,
    rate_per_second_spaces_calls,
    a_closed_window_postpones_the_call_to_its_opening,
    due_makes_one_dispatch_job_for_all_first_calls,
);
