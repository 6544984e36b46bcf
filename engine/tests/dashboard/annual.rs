//! The annual report, on both backends: a log with back-dated histories in last calendar year
//! (and just outside it), whose figures are known, read through `GET /v1/reports/annual` as
//! JSON and CSV, and on the dashboard; bad queries are named.

use chrono::{Datelike, NaiveDate};

use super::*;

const AUDITOR: &str = "lethe_auditor-token-8901";

/// A time of `year` (month, day, hour, minute), UTC.
fn at(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(year, month, day)
        .unwrap()
        .and_hms_opt(hour, minute, 0)
        .unwrap()
        .and_utc()
}

fn skip(cleaner: &str, at: DateTime<Utc>) -> Command {
    Command::SkipCleaner {
        cleaner: CleanerName::parse(cleaner).unwrap(),
        at,
        reason: "the system was decommissioned".into(),
    }
}

/// Nine requests in `year` and around it, in two jurisdictions.
async fn seed_year(requests: &Requests, year: i32) {
    let y = |month, day, hour, minute| at(year, month, day, hour, minute);
    // (Each request is made due at once, expedited, whatever its grace period.)
    // CCPA, complied with in whole: received 1 March, completed 11 March (10 days).
    let id = received(requests, 1, "ccpa", y(3, 1, 10, 0)).await;
    run(requests, id, due(y(3, 2, 10, 0), &["billing", "crm"], true)).await;
    run(requests, id, success("billing", 1, y(3, 2, 11, 0))).await;
    run(requests, id, success("crm", 1, y(3, 11, 23, 0))).await;
    // CCPA, complied with in part: received late on 30 June, crm skipped on 2 July (2
    // calendar days, though barely a day).
    let id = received(requests, 2, "ccpa", y(6, 30, 23, 30)).await;
    run(requests, id, due(y(7, 1, 0, 0), &["billing", "crm"], true)).await;
    run(requests, id, success("billing", 1, y(7, 1, 0, 5))).await;
    run(requests, id, skip("crm", y(7, 2, 0, 10))).await;
    // CCPA, denied: received on the last minute of the year, rejected on 5 January after.
    let id = received(requests, 3, "ccpa", y(12, 31, 23, 59)).await;
    let reason = "not a verifiable request".to_owned();
    let rejected = at(year + 1, 1, 5, 9, 0);
    run(
        requests,
        id,
        Command::Reject {
            at: rejected,
            reason,
        },
    )
    .await;
    // CCPA, cancelled the day after receipt: counted, never answered.
    let id = received(requests, 4, "ccpa", y(5, 1, 8, 0)).await;
    let cancelled = y(5, 2, 8, 0);
    run(
        requests,
        id,
        Command::Cancel {
            at: cancelled,
            reason: None,
        },
    )
    .await;
    // CCPA, still open (on hold).
    let id = received(requests, 5, "ccpa", y(8, 1, 8, 0)).await;
    let hold = Command::PlaceHold {
        at: y(8, 2, 8, 0),
        reason: "litigation".into(),
    };
    run(requests, id, hold).await;
    // CCPA, just outside the year on either side.
    received(requests, 6, "ccpa", at(year - 1, 12, 31, 23, 59)).await;
    received(requests, 7, "ccpa", at(year + 1, 1, 1, 0, 0)).await;
    // GDPR: denied the day after receipt (1 day), and completed in 30 days.
    let id = received(requests, 8, "gdpr", y(2, 10, 12, 0)).await;
    let reason = "identity not confirmed".to_owned();
    run(
        requests,
        id,
        Command::Reject {
            at: y(2, 11, 1, 0),
            reason,
        },
    )
    .await;
    let id = received(requests, 9, "gdpr", y(4, 1, 12, 0)).await;
    run(requests, id, due(y(5, 1, 12, 0), &["billing"], true)).await;
    run(requests, id, success("billing", 1, y(5, 1, 12, 30))).await;
}

async fn report_app(store: &TestStore, year: i32) -> axum::Router {
    let database = store.database();
    let config = TestConfig::new()
        .token(
            "auditor",
            &token_hash(AUDITOR),
            &["audit:read", "requests:read"],
        )
        .token("reader", &token_hash(READER), &["requests:read"])
        .build();
    let requests = engine(&database, config);
    seed_year(&requests, year).await;
    lethe_engine::projections::catch_up(&database.events, &database.projections)
        .await
        .unwrap();
    router(AppState {
        requests,
        key: MasterKey::from_bytes([7; 32]),
    })
}

async fn get(app: &axum::Router, uri: &str, token: &str) -> (StatusCode, String, String) {
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn expected(year: i32) -> Value {
    serde_json::json!({
        "year": year,
        "jurisdictions": [
            {
                "jurisdiction": "ccpa", "received": 5, "complied_in_whole": 1,
                "complied_in_part": 1, "denied": 1, "cancelled": 1, "open": 1,
                // 2, 5 and 10 days.
                "median_days_to_respond": 5.0, "mean_days_to_respond": 5.67,
            },
            {
                "jurisdiction": "gdpr", "received": 2, "complied_in_whole": 1,
                "complied_in_part": 0, "denied": 1, "cancelled": 0, "open": 0,
                // 1 and 30 days.
                "median_days_to_respond": 15.5, "mean_days_to_respond": 15.5,
            },
        ],
    })
}

async fn the_annual_report_counts_the_year(store: TestStore) {
    let year = Utc::now().year() - 1;
    let app = report_app(&store, year).await;
    let (status, content_type, body) =
        get(&app, &format!("/v1/reports/annual?year={year}"), AUDITOR).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type, "application/json");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report, expected(year));

    let uri = format!("/v1/reports/annual?year={year}&jurisdiction=ccpa&format=csv");
    let (status, content_type, csv) = get(&app, &uri, AUDITOR).await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(
        csv,
        format!(
            "year,jurisdiction,received,complied_in_whole,complied_in_part,denied,cancelled,\
             open,median_days_to_respond,mean_days_to_respond\n{year},ccpa,5,1,1,1,1,1,5,5.67\n"
        )
    );
    // A jurisdiction that received nothing is listed, with nothing to average.
    let uri = format!("/v1/reports/annual?year={year}&jurisdiction=lgpd");
    let (_, _, body) = get(&app, &uri, AUDITOR).await;
    let lgpd: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(lgpd["jurisdictions"][0]["received"], 0);
    assert_eq!(
        lgpd["jurisdictions"][0]["median_days_to_respond"],
        Value::Null
    );
    // The year before holds only the request received on its last minute.
    let (_, _, body) = get(
        &app,
        &format!("/v1/reports/annual?year={}", year - 1),
        AUDITOR,
    )
    .await;
    let before: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(before["jurisdictions"][0]["received"], 1, "{before}");
    assert_eq!(before["jurisdictions"][0]["open"], 1, "{before}");

    for (query, field) in [
        ("year=1969", "year"),
        ("year=soon", "query"),
        ("", "query"),
        ("year=2025&jurisdiction=CCPA!", "jurisdiction"),
        ("year=2025&format=xml", "query"),
    ] {
        let (status, _, body) = get(&app, &format!("/v1/reports/annual?{query}"), AUDITOR).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.contains(field), "{query}: {body}");
    }
    let (status, _, _) = get(&app, &format!("/v1/reports/annual?year={year}"), READER).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the report needs audit:read");

    // The dashboard shows last year's report, figure by figure.
    let (status, _, html) = get(&app, "/dashboard", READER).await;
    assert_eq!(status, StatusCode::OK);
    let mut shown = BTreeMap::new();
    let mut rest = html.as_str();
    while let Some(i) = rest.find(" data-report=\"") {
        let close = i + rest[i..].find('>').unwrap();
        let tag = &rest[i..close];
        shown.insert(
            attribute(tag, "data-report").unwrap(),
            attribute(tag, "data-value")
                .unwrap()
                .parse::<f64>()
                .unwrap(),
        );
        rest = &rest[close..];
    }
    let mut wanted = BTreeMap::new();
    for j in expected(year)["jurisdictions"].as_array().unwrap() {
        let mut numbers = BTreeMap::new();
        flatten(j, "", &mut numbers);
        for (field, (value, _)) in numbers {
            wanted.insert(
                format!("{year}.{}.{field}", j["jurisdiction"].as_str().unwrap()),
                value,
            );
        }
    }
    shown.retain(|path, _| path.starts_with(&year.to_string()));
    assert_eq!(shown, wanted);
}

support::backends!(the_annual_report_counts_the_year);
