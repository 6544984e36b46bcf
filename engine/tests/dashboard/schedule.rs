//! A running engine: a cleaner that failed waits for its retry, and the request page says
//! when it is due, as the workflow scheduled it.

use support::config::Cleaner;
use support::engine::{eventually, TestEngine};
use support::fake_service::FakeService;

use super::router::{get, send};
use super::*;

async fn a_request_page_shows_when_a_cleaner_is_retried(store: TestStore) {
    // Always 503: the first attempt fails and the next is an hour away.
    let crm = FakeService::start(&[503]).await;
    let config =
        TestConfig::new().cleaner(Cleaner::http("crm", &crm.url).retry(3, "1h", "1h", 1.0));
    let engine = TestEngine::spawn(&store, config).await;
    let id = engine.submit_due(&[("user_id", "scheduled")]).await;
    let app = engine.router();
    let page = format!("/dashboard/requests/{id}");
    let next = eventually(
        Duration::from_secs(20),
        "the page shows attempt 2's time",
        || {
            let app = app.clone();
            let page = page.clone();
            async move {
                let (_, _, html) = send(&app, get(&page, None)).await;
                let at = html.find("attempt 2 at ")? + 13;
                Some(html[at..at + 16].to_owned())
            }
        },
    )
    .await;
    let next = chrono::NaiveDateTime::parse_from_str(&next, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc();
    let wait = next - Utc::now();
    assert!(
        wait > TimeDelta::minutes(30) && wait < TimeDelta::minutes(91),
        "attempt 2 is {wait} away"
    );
    assert!(!crm.calls().is_empty());
}
support::backends!(a_request_page_shows_when_a_cleaner_is_retried);
