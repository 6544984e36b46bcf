//! Notifier retries, callback timeouts, admin operations, manual cleaners and job changes.

use super::*;

async fn a_failing_notifier_is_retried_without_blocking_the_request(store: TestStore) {
    let notifier = FakeService::start(&[500, 500]).await;
    // A manual cleaner keeps the request from completing, so the notifier hears only the
    // reminder (a completion would be offered to it too).
    let config = config("7s")
        .reminders(&["6s"])
        .notifier(&notifier.url, None, None)
        .cleaner(Cleaner::manual("archive"));
    let engine = Engine::start(store, config).await;
    let id = engine.submit("18", "gdpr").await;
    engine
        .wait_for(id, RequestStatus::Due, Duration::from_secs(15))
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
    let config =
        config("1s").cleaner(cleaner("forgetful", &forgetful.url).callback_timeout("500ms"));
    let engine = Engine::start(store, config).await;
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
    let config = config("1h").cleaner(cleaner("billing", &billing.url));
    let engine = Engine::start(store, config).await;
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
    let config = config("1s").cleaner(Cleaner::manual("archive"));
    let engine = Engine::start(store, config).await;
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

support::backends!(
    a_failing_notifier_is_retried_without_blocking_the_request,
    a_missing_callback_times_out_into_a_retry,
    admin_operations_over_http,
    a_manual_cleaner_waits_for_a_person,
    job_changes_apply_in_order,
);
