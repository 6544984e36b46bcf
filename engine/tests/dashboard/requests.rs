//! Through the router: the request list (`GET /dashboard/requests`) against `GET /v1/requests`
//! with the same filters, its pages, a bad filter; and one request's page.

use lethe_engine::app::progress::{AwaitedResults, CleanerProgress, Progress};
use lethe_engine::store::StoreError;

use super::router::{get, send};
use super::*;

/// The ids `GET /v1/requests?{query}` lists, page after page, and how many pages.
async fn api_ids(app: &axum::Router, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/requests?{query}&cursor={c}"),
            None => format!("/v1/requests?{query}"),
        };
        let (status, _, body) = send(app, get(&uri, Some(READER))).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

/// The ids the dashboard's list shows for `query`, following its "next page" links; and the
/// number of pages.
async fn page_ids(app: &axum::Router, query: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut uri = format!("/dashboard/requests?{query}");
    let mut pages = 0;
    loop {
        pages += 1;
        let (status, headers, html) = send(app, get(&uri, Some(READER))).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {html}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(!html.contains("<script"));
        ids.extend(listed(&html, "requests"));
        let Some(at) = html.find("rel=\"next\"") else {
            return (ids, pages);
        };
        let href_at = html[..at].rfind("href=\"").unwrap() + 6;
        let href = &html[href_at..];
        uri = href[..href.find('"').unwrap()].replace("&amp;", "&");
        assert!(uri.starts_with("/dashboard/requests?"), "{uri}");
    }
}

#[tokio::test]
async fn the_list_filters_and_pages_as_the_api_does() {
    let store = support::sqlite().await;
    let (app, seeded) = seeded(&store, config_with_tokens()).await;

    // Empty fields of the form are no filter; every request in order of receipt.
    let (all, pages) = page_ids(&app, "status=&jurisdiction=").await;
    assert_eq!(all.len(), 12);
    assert_eq!(pages, 1);
    assert_eq!(all, api_ids(&app, "").await);

    for (query, expected) in [
        ("status=on_hold", 1),
        ("status=needs_attention", 1),
        ("status=completed", 4),
        ("overdue=true", 1),
        ("at_risk=true", 2),
        ("jurisdiction=ccpa", 2),
        ("jurisdiction=ccpa&status=completed", 1),
        // crm failed for good on one request; billing keeps failing on the overdue one.
        ("cleaner=crm", 1),
        ("cleaner=billing", 1),
        ("cleaner=billing&overdue=true", 1),
        ("cleaner=crm&overdue=true", 0),
    ] {
        let (ids, _) = page_ids(&app, query).await;
        assert_eq!(ids.len(), expected, "{query}");
        assert_eq!(ids, api_ids(&app, query).await, "{query}");
    }
    let (overdue, _) = page_ids(&app, "overdue=true").await;
    assert_eq!(overdue, [seeded.overdue.to_string()]);
    let (billing, _) = page_ids(&app, "cleaner=billing").await;
    assert_eq!(billing, overdue);

    // Pages of five by the API's cursor: 5 + 5 + 2, the filters kept on each link.
    let (ids, pages) = page_ids(&app, "limit=5").await;
    assert_eq!((ids.len(), pages), (12, 3));
    assert_eq!(ids, all);
    let (ids, pages) = page_ids(&app, "limit=1&jurisdiction=ccpa").await;
    assert_eq!((ids.len(), pages), (2, 2));

    // The form shows the filters it applied.
    let (_, _, html) = send(
        &app,
        get(
            "/dashboard/requests?status=on_hold&overdue=true",
            Some(READER),
        ),
    )
    .await;
    assert!(
        html.contains("<option value=\"on_hold\" selected>"),
        "{html}"
    );
    assert!(html.contains("name=\"overdue\" value=\"true\" checked"));
    assert!(html.contains("name=\"at_risk\" value=\"true\">"));
    let (_, _, html) = send(&app, get("/dashboard/requests?cleaner=crm", Some(READER))).await;
    assert!(html.contains("name=\"cleaner\" value=\"crm\""), "{html}");
}

#[tokio::test]
async fn a_bad_filter_is_a_page_naming_the_field() {
    let store = support::sqlite().await;
    let (app, _) = seeded(&store, config_with_tokens()).await;
    for (query, field) in [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("cursor=nope", "cursor"),
        ("received_from=yesterday", "received_from"),
        ("overdue=maybe", "query"),
        ("cleaner=not%20a%20name", "cleaner"),
        // Only the form's select and text fields may be empty; the others must be valid.
        ("overdue=", "query"),
        ("limit=", "query"),
        ("cursor=", "cursor"),
        ("colour=red", "query"),
    ] {
        let (status, headers, html) = send(
            &app,
            get(&format!("/dashboard/requests?{query}"), Some(READER)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(
            html.contains(&format!("data-field=\"{field}\"")),
            "{query}: {html}"
        );
        // The API names the same field.
        let (status, _, body) =
            send(&app, get(&format!("/v1/requests?{query}"), Some(READER))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["field"], field, "{query}");
    }
    // Signed out: the sign-in page, not the list.
    let (status, _, _) = send(&app, get("/dashboard/requests", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&app, get("/dashboard/requests", Some(ADMIN))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_dashboard_links_to_the_list_and_to_request_pages() {
    let store = support::sqlite().await;
    let (app, seeded) = seeded(&store, config_with_tokens()).await;
    let (_, _, html) = send(&app, get("/dashboard", Some(READER))).await;
    assert!(html.contains("href=\"/dashboard/requests\""));
    let overdue = seeded.overdue.to_string();
    assert!(
        html.contains(&format!(
            "<a href=\"/dashboard/requests/{overdue}\">{overdue}</a>"
        )),
        "{html}"
    );
}

/// The request page shows what `GET /v1/requests/{id}` and its history show, and no subject.
#[tokio::test]
async fn a_request_page_shows_its_state_cleaners_and_timeline() {
    let store = support::sqlite().await;
    let (app, _) = seeded(&store, config_with_tokens()).await;
    let id = api_ids(&app, "status=needs_attention").await.remove(0);

    let (status, headers, html) = send(
        &app,
        get(&format!("/dashboard/requests/{id}"), Some(READER)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("form-action 'self'"));
    assert!(!html.contains("<script"));
    let (_, _, body) = send(&app, get(&format!("/v1/requests/{id}"), Some(READER))).await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert!(html.contains("data-status=\"needs_attention\""));
    assert!(html.contains(&format!(
        "data-deadline=\"{}\"",
        view["deadline"].as_str().unwrap()
    )));
    assert!(html.contains("<dd>GDPR</dd>"));
    // Cleaners: billing succeeded; crm failed twice with HTTP 503 and waits for a person.
    assert!(html.contains("data-cleaner=\"billing\" data-state=\"succeeded\""));
    assert!(html.contains("data-cleaner=\"crm\" data-state=\"exhausted\""));
    assert!(html.contains("2 of 2"));
    assert!(html.contains("HTTP 503 (HTTP 503, retryable)"), "{html}");
    // The timeline is the auditor's: a reader is told it needs audit:read.
    assert!(timeline(&html).is_empty(), "{html}");
    assert!(html.contains("needs a token with the scope <code>audit:read</code>"));
    let (_, _, audited) = send(
        &app,
        get(&format!("/dashboard/requests/{id}"), Some(OPERATOR)),
    )
    .await;
    // With audit:read: every event of the history, in order, with its actor; the chain verifies.
    let (_, _, body) = send(
        &app,
        get(&format!("/v1/requests/{id}/history"), Some(AUDITOR)),
    )
    .await;
    let history: Value = serde_json::from_str(&body).unwrap();
    let shown: Vec<(String, String)> = timeline(&audited);
    let expected: Vec<(String, String)> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(shown, expected);
    assert_eq!(shown.len(), 5);
    assert!(audited.contains("data-verified=\"true\""));
    assert!(!audited.contains("dash-5"));
    // The subject is not on the page (the API shows it to audit:read only).
    assert!(
        history["subject"]["identifiers"]["user_id"] == "dash-5",
        "{history}"
    );
    assert!(!html.contains("dash-5"));
    // A reader sees no action form.
    assert!(!html.contains("method=\"post\""));

    // Not a request id; no such request.
    let (status, _, _) = send(&app, get("/dashboard/requests/nope", Some(READER))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let missing = RequestId::from_uuid(uuid::Uuid::now_v7());
    let (status, headers, html) = send(
        &app,
        get(&format!("/dashboard/requests/{missing}"), Some(READER)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(html.contains("no request"), "{html}");
    let (status, _, _) = send(&app, get(&format!("/dashboard/requests/{id}"), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The timeline's rows: (event type, actor), in order.
pub(crate) fn timeline(html: &str) -> Vec<(String, String)> {
    let start = html.find("id=\"timeline\"").expect("a timeline");
    let end = start + html[start..].find("</section>").unwrap();
    html[start..end]
        .split("<tr data-event=\"")
        .skip(1)
        .map(|row| {
            let kind = row[..row.find('"').unwrap()].to_owned();
            let actor = attribute(row, "data-actor").unwrap();
            (kind, actor)
        })
        .collect()
}

/// Where the test says a cleaner reported progress (the workflow's callback jobs in `serve`).
#[derive(Debug)]
struct Reported(Vec<CleanerProgress>);

#[async_trait::async_trait]
impl AwaitedResults for Reported {
    async fn heartbeat(
        &self,
        _: RequestId,
        _: &CleanerProgress,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn progress_of(&self, _: RequestId) -> Result<Vec<CleanerProgress>, StoreError> {
        Ok(self.0.clone())
    }
}

/// A pending cleaner's reported progress is on the page, as `GET /v1/requests/{id}` shows it.
#[tokio::test]
async fn a_request_page_shows_a_cleaners_progress() {
    let store = support::sqlite().await;
    let database = store.database();
    let at = now_micros();
    let reported = CleanerProgress {
        cleaner: CleanerName::parse("crm").unwrap(),
        attempt: 1,
        progress: Progress::new(40, Some(100)).unwrap(),
        at,
        deadline: at + TimeDelta::hours(2),
    };
    let requests =
        engine(&database, config_with_tokens()).with_awaited(Arc::new(Reported(vec![reported])));
    let id = submitted(&requests, 300).await;
    run(&requests, id, due(at, &["billing", "crm"], true)).await;
    let app = router(AppState {
        requests,
        key: MasterKey::from_bytes([7; 32]),
    });
    let (status, _, html) = send(
        &app,
        get(&format!("/dashboard/requests/{id}"), Some(READER)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let expected = format!(
        "attempt 1: 40 done of 100, reported {}; fails unless heard from by {} UTC",
        at.format("%Y-%m-%d %H:%M"),
        (at + TimeDelta::hours(2)).format("%Y-%m-%d %H:%M")
    );
    assert!(html.contains(&expected), "{html}");
    // billing reported nothing: its next attempt only.
    assert!(html.contains("<td>attempt 1</td>"), "{html}");
    let (_, _, body) = send(&app, get(&format!("/v1/requests/{id}"), Some(READER))).await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["cleaners"][1]["progress"]["done"], 40);
}
