//! Master keys in process, on both backends (real Postgres, real SQLite): a key other than
//! the database's is refused naming both fingerprints (also for data sealed before key check
//! values were recorded); a history read without the right key shows every event with the
//! subject sealed (HTTP included); and a rotation interrupted part-way, while a process that
//! still holds only the old key keeps submitting and reading, resumes from another process and
//! converts everything: data keys re-wrapped, blind indexes re-keyed, the old key's records
//! gone, lookups by subject and by external id still finding their requests, and a cancel
//! token issued before the rotation still accepted over HTTP while its request is in its
//! grace period (not once it is due).

mod support;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use lethe_domain::{Command, RequestId};
use lethe_engine::app::keys::{rotate, Progress, RotateOptions, Rotated};
use lethe_engine::app::{Requests, SubjectAccess, Submission};
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::key_ring;
use lethe_engine::store::master_key::{KeyMaterial, MasterKey};
use lethe_engine::store::EventMetadata;
use serde_json::Value;
use support::TestStore;
use tower::ServiceExt as _;

const OLD: [u8; 32] = [0x01; 32];
const NEW: [u8; 32] = [0x02; 32];

fn fingerprint(bytes: [u8; 32]) -> String {
    KeyMaterial::from_bytes(bytes).fingerprint()
}

fn requests(t: &TestStore, key: &MasterKey) -> Requests {
    let database = t.database();
    Requests::new(database.events.clone(), Arc::new(Config::default()))
        .with_projections(database.projections.clone())
        .with_sealing(key.clone(), database.keys.clone())
}

/// Submits a request for subject `user_id=user`; returns its id and whether it is new.
async fn submit(requests: &Requests, user: &str, external_id: Option<&str>) -> (RequestId, bool) {
    let submission = Submission {
        subject: [("user_id".to_owned(), user.to_owned())].into(),
        external_id: external_id.map(ToOwned::to_owned),
        ..Submission::default()
    };
    let submitted = requests.submit(submission, None, "test").await.unwrap();
    (submitted.loaded.request.id, submitted.created)
}

async fn subject(requests: &Requests, id: RequestId) -> SubjectAccess {
    let loaded = requests.load(id).await.unwrap().unwrap();
    requests.subject_of(&loaded.request).await.unwrap()
}

fn clear(user: &str) -> SubjectAccess {
    SubjectAccess::Clear([("user_id".to_owned(), user.to_owned())].into())
}

/// How many data keys are not wrapped under the key with `fingerprint` alone.
async fn not_only_under(t: &TestStore, fingerprint: &str) -> i64 {
    t.fetch_integers(&format!(
        "SELECT COUNT(*) FROM request_keys \
         WHERE wrapped_key NOT LIKE '{fingerprint}:%' OR wrapped_key LIKE '%|%'"
    ))
    .await[0]
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// The first key a database sees is recorded; another one is refused, naming both.
/// Data sealed before key check values existed is checked against the key before it is
/// recorded, and its old-style blind indexes get the key's fingerprint.
async fn a_key_other_than_the_databases_is_refused_naming_both(t: TestStore) {
    let keys = t.database().keys;
    let old = MasterKey::from_bytes(OLD);
    // Written before any key was recorded (as by a version without key check values).
    let (id, _) = submit(&requests(&t, &old), "1", None).await;
    t.execute(&format!(
        "INSERT INTO subject_index (blind_index, request_id) VALUES ('0123abcd', '{id}')"
    ))
    .await;

    let error = key_ring::open(keys.as_ref(), &MasterKey::from_bytes(NEW))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&fingerprint(NEW)), "{error}");
    assert!(error.contains(&fingerprint(OLD)), "{error}");
    assert_eq!(
        t.fetch_integers("SELECT COUNT(*) FROM master_keys").await,
        [0],
        "a refused key is not recorded"
    );

    key_ring::open(keys.as_ref(), &old).await.unwrap();
    assert_eq!(
        t.fetch_integers("SELECT COUNT(*) FROM master_keys").await,
        [1]
    );
    let legacy = t
        .fetch_integers(&format!(
            "SELECT COUNT(*) FROM subject_index WHERE blind_index = '{}:0123abcd'",
            fingerprint(OLD)
        ))
        .await;
    assert_eq!(legacy, [1], "the old-style index got the key's fingerprint");

    // Recorded now: the other key is refused by its check value, naming both.
    let error = key_ring::open(keys.as_ref(), &MasterKey::from_bytes(NEW))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&fingerprint(NEW)) && error.contains(&fingerprint(OLD)),
        "{error}"
    );
    assert!(error.contains("LETHE_MASTER_KEY_FILE"), "{error}");
    key_ring::check(keys.as_ref(), &old).await.unwrap();
}

/// Without the key that opens it, the auditor's history still shows every event and its
/// verdict, with the subject sealed: through `Requests` and over HTTP.
async fn history_without_the_right_key_shows_the_subject_sealed(t: TestStore) {
    let right = MasterKey::from_bytes(OLD);
    let (id, _) = submit(&requests(&t, &right), "42", None).await;
    let wrong = MasterKey::from_bytes(NEW);
    for requests in [
        requests(&t, &wrong),
        Requests::new(t.store(), Arc::new(Config::default())),
    ] {
        let (_, loaded, subject) = requests.history_of(id).await.unwrap().unwrap();
        assert_eq!(subject, SubjectAccess::Unavailable);
        assert_eq!(loaded.events.len(), 1);
        let app = router(AppState {
            requests,
            key: wrong.clone(),
        });
        let (status, body) = send(
            &app,
            Request::get(format!("/v1/requests/{id}/history"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["subject"], "sealed", "{body}");
        assert_eq!(body["verified"], true, "{body}");
        assert_eq!(body["events"][0]["type"], "Received", "{body}");
    }
    let (_, _, subject) = requests(&t, &right).history_of(id).await.unwrap().unwrap();
    assert_eq!(subject, clear("42"));
}

/// The whole rotation: see the module comment.
async fn an_interrupted_rotation_resumes_and_converts_every_key(t: TestStore) {
    let database = t.database();
    let keys = database.keys.clone();
    let serving = MasterKey::from_bytes(OLD);
    key_ring::open(keys.as_ref(), &serving).await.unwrap();
    let before = requests(&t, &serving);
    let mut ids = Vec::new();
    for i in 0..7 {
        let external = (i == 3).then_some("crm-3");
        ids.push(submit(&before, &format!("u{i}"), external).await.0);
    }
    let old_tokens: Vec<String> = ids.iter().map(|id| serving.cancel_token(*id)).collect();
    // Request 5 is due before the rotation: its old cancel link is not kept.
    before
        .execute(ids[5], &EventMetadata::new("test"), |_| Command::MarkDue {
            at: Utc::now(),
            cleaners: Vec::new(),
            expedite: true,
            reason: None,
        })
        .await
        .unwrap();

    rotate_one_batch_then_stop(&t).await;

    // The serving process has not re-read the ring: it still opens every subject, learning
    // the new key from the database when it meets a data key wrapped under it.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(subject(&before, *id).await, clear(&format!("u{i}")), "{i}");
    }
    let held: Vec<(String, bool)> = serving
        .held()
        .iter()
        .map(|h| (h.key.fingerprint(), h.writing))
        .collect();
    assert_eq!(
        held,
        [(fingerprint(NEW), true), (fingerprint(OLD), false)],
        "seals under the new key, reads under both"
    );
    // During the rotation it seals new requests under the new key, and a lookup by subject
    // finds both a converted request and one not converted yet.
    let (during, created) = submit(&before, "u-during", None).await;
    assert!(created);
    assert_eq!(submit(&before, "u0", None).await, (ids[0], false));
    assert_eq!(submit(&before, "u6", None).await, (ids[6], false));
    // A process that never re-reads the ring still seals under the old key alone.
    let stale = MasterKey::from_bytes(OLD);
    let (stale_id, _) = submit(&requests(&t, &stale), "u-stale", None).await;
    assert_eq!(not_only_under(&t, &fingerprint(NEW)).await, 6);

    resume_and_finish(&t).await;
    nothing_of_the_old_key_is_left(&t, &serving).await;

    // After the rotation, with the new key only: every subject opens, lookups by subject and
    // by external id find their requests.
    let new_key = MasterKey::from_bytes(NEW);
    key_ring::open(keys.as_ref(), &new_key).await.unwrap();
    let after = requests(&t, &new_key);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(subject(&after, *id).await, clear(&format!("u{i}")), "{i}");
    }
    assert_eq!(subject(&after, during).await, clear("u-during"));
    assert_eq!(subject(&after, stale_id).await, clear("u-stale"));
    for i in [0, 1, 2, 4, 6] {
        assert_eq!(
            submit(&after, &format!("u{i}"), None).await,
            (ids[i], false),
            "{i}"
        );
    }
    assert_eq!(
        submit(&after, "someone else", Some("crm-3")).await,
        (ids[3], false)
    );
    assert_eq!(submit(&after, "u-stale", None).await, (stale_id, false));

    old_cancel_links_until_due(&after, &new_key, &ids, &old_tokens).await;
}

/// First run, by a process of its own: stopped after its first batch of two.
async fn rotate_one_batch_then_stop(t: &TestStore) {
    let database = t.database();
    let keys = database.keys.clone();
    let options = rotate_options();
    let rotating = MasterKey::from_bytes(OLD);
    key_ring::open(keys.as_ref(), &rotating).await.unwrap();
    let mut seen = Vec::new();
    let first = rotate(
        database.events.as_ref(),
        database.keys.as_ref(),
        &rotating,
        KeyMaterial::from_bytes(NEW),
        options,
        |progress| {
            seen.push(progress);
            if matches!(progress, Progress::Converted(_)) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(first, Rotated::Interrupted { converted: 2 });
    assert_eq!(
        seen,
        [
            Progress::Recorded { resumed: false },
            Progress::Converted(2)
        ]
    );
    assert_eq!(not_only_under(t, &fingerprint(NEW)).await, 5, "part-way");
}

/// Second run, by a process configured with the new key: it resumes and finishes.
async fn resume_and_finish(t: &TestStore) {
    let database = t.database();
    let keys = database.keys.clone();
    let options = rotate_options();
    let resuming = MasterKey::from_bytes(NEW);
    key_ring::open(keys.as_ref(), &resuming).await.unwrap();
    let mut seen = Vec::new();
    let second = rotate(
        database.events.as_ref(),
        database.keys.as_ref(),
        &resuming,
        KeyMaterial::from_bytes(NEW),
        options,
        |progress| {
            seen.push(progress);
            ControlFlow::Continue(())
        },
    )
    .await
    .unwrap();
    assert_eq!(second, Rotated::Finished { converted: 6 });
    assert_eq!(seen[0], Progress::Recorded { resumed: true });
}

/// Two keys a batch, without waiting for processes to learn the new key.
const fn rotate_options() -> RotateOptions {
    RotateOptions {
        settle: Duration::ZERO,
        batch: 2,
    }
}

/// Everything under the new key alone; nothing of the old key left. The serving process
/// forgets the old key.
async fn nothing_of_the_old_key_is_left(t: &TestStore, serving: &MasterKey) {
    let keys = t.database().keys;
    assert_eq!(not_only_under(t, &fingerprint(NEW)).await, 0);
    assert_eq!(
        t.fetch_integers("SELECT COUNT(*) FROM request_keys").await,
        [9]
    );
    let stray = t
        .fetch_integers(&format!(
            "SELECT COUNT(*) FROM subject_index WHERE blind_index NOT LIKE '{}:%'",
            fingerprint(NEW)
        ))
        .await;
    assert_eq!(stray, [0]);
    assert_eq!(
        t.fetch_integers("SELECT COUNT(*) FROM subject_index").await,
        [9]
    );
    assert_eq!(
        t.fetch_integers("SELECT COUNT(*) FROM master_keys").await,
        [1]
    );
    assert_eq!(
        t.fetch_integers("SELECT COUNT(*) FROM master_key_wraps")
            .await,
        [0]
    );
    let error = key_ring::open(keys.as_ref(), &MasterKey::from_bytes(OLD))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&fingerprint(OLD)) && error.contains(&fingerprint(NEW)),
        "the retired key is refused: {error}"
    );
    key_ring::refresh(keys.as_ref(), serving).await.unwrap();
    assert_eq!(
        serving.held().len(),
        1,
        "the serving process forgot the old key"
    );
    assert_eq!(serving.newest().fingerprint(), fingerprint(NEW));
}

/// Cancel links from before the rotation: kept while in the grace period, not once due.
async fn old_cancel_links_until_due(
    after: &Requests,
    new_key: &MasterKey,
    ids: &[RequestId],
    old_tokens: &[String],
) {
    assert!(!new_key.verify_cancel_token(ids[1], &old_tokens[1]));
    assert!(after
        .previous_cancel_token(ids[1], &old_tokens[1])
        .await
        .unwrap());
    assert!(!after
        .previous_cancel_token(ids[1], &old_tokens[2])
        .await
        .unwrap());
    assert!(!after
        .previous_cancel_token(ids[5], &old_tokens[5])
        .await
        .unwrap());
    let app = router(AppState {
        requests: after.clone(),
        key: new_key.clone(),
    });
    let cancel = |id: RequestId, token: &str| {
        Request::post(format!("/v1/requests/{id}/cancel?token={token}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, body) = send(&app, cancel(ids[2], &old_tokens[1])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = send(&app, cancel(ids[1], &old_tokens[1])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    let (status, body) = send(&app, cancel(ids[2], &new_key.cancel_token(ids[2]))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

support::backends!(
    a_key_other_than_the_databases_is_refused_naming_both,
    history_without_the_right_key_shows_the_subject_sealed,
    an_interrupted_rotation_resumes_and_converts_every_key,
);
