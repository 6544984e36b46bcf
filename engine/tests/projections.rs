//! The `requests` projection on both backends: built incrementally by its subscription while a
//! random workload runs, it equals the model rebuilt from an empty table; lists filter and page
//! with a cursor that stays stable while requests keep arriving; the dashboard figures add up.

mod support;

use std::collections::BTreeMap;

use chrono::Utc;
use lethe_domain::{CleanerName, Command, RequestId, RequestStatus, Span};
use lethe_engine::app::stats::compute_stats;
use lethe_engine::app::{Requests, Submission};
use lethe_engine::projections::{rebuild, RequestFilter, REQUESTS};
use lethe_engine::root::Database;
use lethe_engine::store::EventMetadata;
use lethe_projections::requests::RequestRow;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::projection::{all_rows, catch_up, plan, requests, runner};
use support::TestStore;

async fn submit(requests: &Requests, n: usize, jurisdiction: &str) -> RequestId {
    requests
        .submit(
            Submission {
                subject: BTreeMap::from([("user_id".to_owned(), format!("u{n}"))]),
                jurisdiction: Some(jurisdiction.to_owned()),
                source: Some(
                    if n.is_multiple_of(2) {
                        "app"
                    } else {
                        "support"
                    }
                    .to_owned(),
                ),
                ..Submission::default()
            },
            None,
            "test",
        )
        .await
        .unwrap()
        .loaded
        .request
        .id
}

/// One random operation on a request (refusals are fine: the workload is random).
async fn random_op(requests: &Requests, id: RequestId, rng: &mut StdRng) {
    let cleaner = CleanerName::parse(if rng.random_bool(0.5) {
        "billing"
    } else {
        "crm"
    })
    .unwrap();
    let attempt = rng.random_range(1..=2);
    let retryable = rng.random_bool(0.5);
    let choice = rng.random_range(0..9);
    let meta = EventMetadata::new("test");
    let _ = requests
        .execute(id, &meta, |_| {
            let at = Utc::now();
            match choice {
                0 => Command::PlaceHold {
                    at,
                    reason: "hold".into(),
                },
                1 => Command::ReleaseHold { at, reason: None },
                2 => Command::ExtendDeadline {
                    at,
                    by: Span::days(10),
                    reason: "x".into(),
                },
                3 => Command::Cancel { at, reason: None },
                4 | 5 => Command::MarkDue {
                    at,
                    cleaners: plan(),
                    expedite: true,
                    reason: None,
                },
                6 => Command::RecordCleanerSuccess {
                    cleaner: cleaner.clone(),
                    attempt,
                    at,
                    deleted: None,
                    detail: None,
                },
                7 => Command::RecordCleanerFailure {
                    cleaner: cleaner.clone(),
                    attempt,
                    at,
                    error: "HTTP 503".into(),
                    status_code: Some(503),
                    retryable,
                    retry_after_seconds: None,
                },
                _ => Command::SkipCleaner {
                    cleaner: cleaner.clone(),
                    at,
                    reason: "gone".into(),
                },
            }
        })
        .await;
}

async fn rebuild_equals_incremental(store: TestStore) {
    let database = store.database();
    let requests = requests(&database);
    let live = runner(&database, "live");
    let mut rng = StdRng::seed_from_u64(rand::random());
    let mut ids = Vec::new();
    for round in 0..8 {
        for n in 0..6 {
            ids.push(
                submit(
                    &requests,
                    round * 10 + n,
                    if n % 3 == 0 { "ccpa" } else { "gdpr" },
                )
                .await,
            );
        }
        for _ in 0..30 {
            let id = ids[rng.random_range(0..ids.len())];
            random_op(&requests, id, &mut rng).await;
        }
        // The live projection runs between bursts of the workload, as it would in serve.
        catch_up(&database, &live).await;
    }
    let incremental = all_rows(&database, 7).await;
    assert_eq!(incremental.len(), ids.len());
    cleaner_lists_agree(&database, &incremental).await;
    let statuses: std::collections::BTreeSet<_> = incremental.iter().map(|r| r.status).collect();
    assert!(
        statuses.len() >= 3,
        "the workload reached several statuses: {statuses:?}"
    );

    database
        .workflow
        .release_subscription(REQUESTS, "live")
        .await
        .unwrap();
    let mut reports = 0;
    let handled = rebuild(
        &database.events,
        &database.projections,
        REQUESTS,
        &mut |_, _| reports += 1,
    )
    .await
    .unwrap();
    assert!(reports > 0);
    let head = database.events.head_position().await.unwrap();
    assert!(handled > 0 && i64::try_from(handled).unwrap() <= head);
    let rebuilt = all_rows(&database, 7).await;
    assert_eq!(
        rebuilt, incremental,
        "the rebuilt model equals the incremental one"
    );
    cleaner_lists_agree(&database, &rebuilt).await;

    // Each row is the fold of its own stream.
    for row in &rebuilt {
        let loaded = requests.load(row.id).await.unwrap().unwrap();
        assert_eq!(row.status, loaded.request.status());
        assert_eq!(row.deadline, loaded.request.deadline);
    }
}

/// The `cleaner` list (read through its index) holds exactly the rows whose cleaner is still
/// pending or exhausted, in order of receipt.
async fn cleaner_lists_agree(database: &Database, rows: &[RequestRow]) {
    let mut listed_any = false;
    for name in ["billing", "crm", "nobody"] {
        let filter = RequestFilter {
            cleaner: Some(name.to_owned()),
            ..Default::default()
        };
        let listed: Vec<RequestId> = database
            .projections
            .list_requests(&filter, None, 1000)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let expected: Vec<RequestId> = rows
            .iter()
            .filter(|r| {
                r.cleaners
                    .iter()
                    .any(|c| c.name == name && matches!(c.status.as_str(), "pending" | "exhausted"))
            })
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, expected, "cleaner={name}");
        listed_any |= !listed.is_empty();
    }
    assert!(listed_any, "the workload left some cleaner unfinished");
}

async fn lists_filter_and_page_stably(store: TestStore) {
    let database = store.database();
    let requests = requests(&database);
    let live = runner(&database, "live");
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(submit(&requests, n, if n < 4 { "ccpa" } else { "gdpr" }).await);
    }
    hold_cancel_and_fail(&requests, &ids).await;
    catch_up(&database, &live).await;

    let list = |filter: RequestFilter| {
        let database = database.clone();
        async move {
            database
                .projections
                .list_requests(&filter, None, 100)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        list(RequestFilter {
            jurisdiction: Some("ccpa".into()),
            ..Default::default()
        })
        .await
        .len(),
        4
    );
    let held = list(RequestFilter {
        status: Some(RequestStatus::OnHold),
        ..Default::default()
    })
    .await;
    assert_eq!(held.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[5]]);
    let attention = list(RequestFilter {
        needs_attention: true,
        ..Default::default()
    })
    .await;
    assert_eq!(attention.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[7]]);
    assert!(attention[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("HTTP 400"));
    // GDPR: one month from today; CCPA: 45 days. "At risk" within 31 days catches only GDPR
    // ones; looked at from 40 days on, the open ones are overdue.
    let today = Utc::now().date_naive();
    let at_risk = list(RequestFilter {
        at_risk: true,
        at_risk_days: 31,
        today: Some(today),
        ..Default::default()
    })
    .await;
    assert!(at_risk
        .iter()
        .all(|r| r.jurisdiction == "gdpr" && r.status != RequestStatus::Cancelled));
    assert_eq!(at_risk.len(), 7, "the open gdpr requests");
    let later = today + chrono::TimeDelta::days(40);
    let overdue = list(RequestFilter {
        overdue: true,
        today: Some(later),
        ..Default::default()
    })
    .await;
    assert_eq!(overdue.len(), 7);
    let from_filter = RequestFilter {
        received_from: Some(Utc::now() + chrono::TimeDelta::hours(1)),
        ..Default::default()
    };
    assert!(list(from_filter).await.is_empty());

    // A cursor page, then more arrivals, then the next page: nothing skipped, nothing twice.
    let first = database
        .projections
        .list_requests(&RequestFilter::default(), None, 5)
        .await
        .unwrap();
    for n in 100..104 {
        ids.push(submit(&requests, n, "gdpr").await);
    }
    catch_up(&database, &live).await;
    let mut seen: Vec<RequestId> = first.iter().map(|r| r.id).collect();
    let mut after = first.last().map(|r| r.id);
    loop {
        let page = database
            .projections
            .list_requests(&RequestFilter::default(), after, 5)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(seen, ids, "every request once, in order of receipt");
}

/// Puts the sixth request on hold, cancels the seventh, and makes the eighth need attention.
async fn hold_cancel_and_fail(requests: &Requests, ids: &[RequestId]) {
    let meta = EventMetadata::new("test");
    requests
        .execute(ids[5], &meta, |_| Command::PlaceHold {
            at: Utc::now(),
            reason: "x".into(),
        })
        .await
        .unwrap();
    requests
        .execute(ids[6], &meta, |_| Command::Cancel {
            at: Utc::now(),
            reason: None,
        })
        .await
        .unwrap();
    requests
        .execute(ids[7], &meta, |_| Command::MarkDue {
            at: Utc::now(),
            cleaners: plan(),
            expedite: true,
            reason: None,
        })
        .await
        .unwrap();
    requests
        .execute(ids[7], &meta, |_| Command::RecordCleanerFailure {
            cleaner: CleanerName::parse("crm").unwrap(),
            attempt: 1,
            at: Utc::now(),
            error: "HTTP 400".into(),
            status_code: Some(400),
            retryable: false,
            retry_after_seconds: None,
        })
        .await
        .unwrap();
}

async fn stats_add_up(store: TestStore) {
    let database = store.database();
    let requests = requests(&database);
    let live = runner(&database, "live");
    let meta = EventMetadata::new("test");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(submit(&requests, n, "gdpr").await);
    }
    for id in &ids[..3] {
        requests
            .execute(*id, &meta, |_| Command::MarkDue {
                at: Utc::now(),
                cleaners: plan(),
                expedite: true,
                reason: None,
            })
            .await
            .unwrap();
        for cleaner in ["billing", "crm"] {
            requests
                .execute(*id, &meta, |_| Command::RecordCleanerSuccess {
                    cleaner: CleanerName::parse(cleaner).unwrap(),
                    attempt: 1,
                    at: Utc::now(),
                    deleted: None,
                    detail: None,
                })
                .await
                .unwrap();
        }
    }
    requests
        .execute(ids[3], &meta, |_| Command::Cancel {
            at: Utc::now(),
            reason: None,
        })
        .await
        .unwrap();
    catch_up(&database, &live).await;
    let stats = compute_stats(&*database.projections, 7, Utc::now().date_naive())
        .await
        .unwrap();
    assert_eq!(stats.total, 5);
    assert_eq!(stats.by_status["completed"], 3);
    assert_eq!(stats.by_status["cancelled"], 1);
    assert_eq!(stats.by_status["pending"], 1);
    assert_eq!(stats.overdue, 0);
    assert_eq!(stats.cleaners["billing"].succeeded, 3);
    assert_eq!(stats.cleaners["billing"].attempts, 3);
    assert!((stats.cleaners["crm"].success_rate - 1.0).abs() < f64::EPSILON);
    let month = Utc::now().format("%Y-%m").to_string();
    assert_eq!(stats.completion[&month].completed, 3);
    assert!(stats.completion[&month].median_days < 1.0);
}

support::backends!(
    rebuild_equals_incremental,
    lists_filter_and_page_stably,
    stats_add_up
);

#[tokio::test]
async fn list_and_stats_over_http() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    let store = support::sqlite().await;
    let database = store.database();
    let requests = requests(&database);
    for n in 0..3 {
        submit(&requests, n, "gdpr").await;
    }
    catch_up(&database, &runner(&database, "live")).await;
    let app = lethe_engine::http::router(lethe_engine::http::AppState {
        requests,
        key: lethe_engine::store::master_key::MasterKey::from_bytes([4; 32]),
    });
    let get = |uri: String| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }
    };
    let (status, page) = get("/v1/requests?limit=2".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["items"][0]["days_left"].as_i64().unwrap() >= 27);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = get(format!("/v1/requests?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest.get("next_cursor").is_none());
    let (status, problem) = get("/v1/requests?status=lost".into()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("status"))
    );
    let (status, problem) = get("/v1/requests?cleaner=Billing%20API".into()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("cleaner"))
    );
    let (status, page) = get("/v1/requests?cleaner=billing".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        0,
        "none is due yet"
    );
    let (status, problem) = get("/v1/requests?limit=0".into()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit"))
    );
    let (status, problem) = get("/v1/requests?received_from=yesterday".into()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("received_from"))
    );
    let (status, stats) = get("/v1/stats".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["by_status"]["pending"], 3);
}

/// `projections::catch_up` (what the CLI runs before answering from the projection) returns
/// only when everything appended before it is projected, also when a transaction left open
/// elsewhere holds the global read back on Postgres: then it waits for that transaction.
#[tokio::test]
async fn catch_up_waits_for_what_an_open_transaction_holds_back() {
    use sqlx::Connection as _;
    let store = support::postgres().await;
    let database = store.database();
    let requests = requests(&database);
    let first = submit(&requests, 0, "gdpr").await;
    // A transaction with an id, older than the next submission's, left open.
    let mut blocker = sqlx::PgConnection::connect(&support::postgres_url())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id();")
        .execute(&mut blocker)
        .await
        .unwrap();
    let second = submit(&requests, 1, "gdpr").await;
    let catching_up = tokio::spawn({
        let database = database.clone();
        async move { lethe_engine::projections::catch_up(&database.events, &database.projections).await }
    });
    // It cannot be done while the blocker is open: the second submission is not readable yet.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !catching_up.is_finished(),
        "returned before the second submission was projected"
    );
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), catching_up)
        .await
        .expect("catch_up did not end after the open transaction did")
        .unwrap()
        .unwrap();
    let ids: Vec<RequestId> = all_rows(&database, 10).await.iter().map(|r| r.id).collect();
    assert!(ids.contains(&first) && ids.contains(&second), "{ids:?}");
}
