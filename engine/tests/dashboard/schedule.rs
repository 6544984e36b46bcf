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
    // The page shows the workflow's own time for attempt 2, to the minute.
    let job = engine
        .jobs(id)
        .await
        .into_iter()
        .find(|j| j.key == "crm" && j.attempt == 2)
        .expect("attempt 2 of crm is scheduled");
    assert_eq!(next, job.run_at.format("%Y-%m-%d %H:%M").to_string());
    // Half the step to the whole step after the failure (the jitter), less the minute the
    // page leaves out.
    let wait = job.run_at - Utc::now();
    assert!(
        wait > TimeDelta::minutes(29) && wait <= TimeDelta::minutes(60),
        "attempt 2 is {wait} away"
    );
    assert!(!crm.calls().is_empty());
}
support::backends!(a_request_page_shows_when_a_cleaner_is_retried);
