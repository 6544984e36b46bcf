//! The subject's cancel link over real HTTP, on both backends: `GET` shows a page with the
//! request's dates and one button and changes nothing however often it is fetched; the
//! button's form `POST` cancels and answers with a page; a wrong token, a request already
//! cancelled, one past its grace period and an unknown one are each a page with its own
//! status; the JSON API answers as before.

mod support;

use std::sync::Arc;

use lethe_domain::RequestId;
use lethe_engine::app::{Requests, Submission};
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::EventMetadata;
use reqwest::StatusCode;
use support::config::TestConfig;
use support::TestStore;

const ADMIN: &str = "lethe_admin-token-4567";
const FORM: &str = "application/x-www-form-urlencoded";

struct Link {
    base: String,
    requests: Requests,
    key: MasterKey,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn serve(t: &TestStore) -> Self {
        let (events, _) = t.stores();
        let config = TestConfig::new()
            .token("admin", &token_hash(ADMIN), &["admin"])
            .build();
        let requests = Requests::new(events, Arc::new(config));
        let key = MasterKey::from_bytes([7; 32]);
        let app = router(AppState {
            requests: requests.clone(),
            key: key.clone(),
        });
        let (base, server) = support::serve_router(app).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            requests,
            key,
            http,
            server,
        }
    }

    async fn submit(&self, user: &str) -> RequestId {
        let submitted = self
            .requests
            .submit(
                Submission {
                    subject: [
                        ("user_id".to_owned(), user.to_owned()),
                        ("email".to_owned(), format!("{user}@example.com")),
                    ]
                    .into(),
                    ..Submission::default()
                },
                None,
                "test",
            )
            .await
            .unwrap();
        submitted.loaded.request.id
    }

    /// The cancel URL the notifier sends for `id`, with `token`.
    fn url(&self, id: RequestId, token: &str) -> String {
        format!("{}/v1/requests/{id}/cancel?token={token}", self.base)
    }

    fn link(&self, id: RequestId) -> String {
        self.url(id, &self.key.cancel_token(id))
    }

    /// A browser's GET: (status, content type, page).
    async fn open(&self, url: &str) -> (StatusCode, String, String) {
        let response = self
            .http
            .get(url)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    /// The page's button: a form POST with an empty form.
    async fn press(&self, url: &str) -> (StatusCode, String, String) {
        let response = self
            .http
            .post(url)
            .header("accept", "text/html")
            .header("content-type", FORM)
            .body("")
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    async fn status(&self, id: RequestId) -> String {
        self.requests.show(id).await.unwrap().status.to_string()
    }
}

async fn answer(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// The `data-outcome` of a page.
fn outcome(page: &str) -> &str {
    let start = page
        .find("data-outcome=\"")
        .unwrap_or_else(|| panic!("no outcome on the page:\n{page}"))
        + "data-outcome=\"".len();
    let len = page[start..].find('"').unwrap();
    &page[start..start + len]
}

fn assert_page(answer: &(StatusCode, String, String), status: StatusCode, expected: &str) {
    let (got, content_type, page) = answer;
    assert_eq!(*got, status, "{page}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(outcome(page), expected, "{page}");
}

async fn get_shows_the_request_and_changes_nothing(t: TestStore) {
    let link = Link::serve(&t).await;
    let id = link.submit("alice").await;
    let view = link.requests.show(id).await.unwrap();
    for _ in 0..10 {
        let answer = link.open(&link.link(id)).await;
        assert_page(&answer, StatusCode::OK, "confirm");
        let page = &answer.2;
        assert!(page.contains("<form method=\"post\">"), "{page}");
        assert_eq!(page.matches("<button").count(), 1, "{page}");
        assert!(
            page.contains(&view.received_at.format("%-d %B %Y").to_string()),
            "{page}"
        );
        assert!(
            page.contains(&view.due_at.format("%-d %B %Y, %H:%M UTC").to_string()),
            "{page}"
        );
        // Nothing of the subject, nor the token, is on the page.
        for secret in ["alice", "example.com", &link.key.cancel_token(id)] {
            assert!(!page.contains(secret), "{secret} is on the page:\n{page}");
        }
        // No external asset: nothing is loaded from anywhere.
        assert!(!page.contains("src=") && !page.contains("href="), "{page}");
    }
    // HEAD, as a link checker may send, changes nothing either.
    let head = link.http.head(link.link(id)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(link.status(id).await, "pending");
    assert_eq!(link.requests.show(id).await.unwrap().version, view.version);
    link.server.abort();
}

async fn the_button_cancels_and_says_so(t: TestStore) {
    let link = Link::serve(&t).await;
    let id = link.submit("bob").await;
    let url = link.link(id);
    assert_page(&link.press(&url).await, StatusCode::OK, "cancelled");
    assert_eq!(link.status(id).await, "cancelled");
    let history = link.requests.history(id, false).await.unwrap();
    let history = serde_json::to_value(&history).unwrap();
    let last = history["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["type"], "Cancelled", "{last}");
    assert_eq!(last["actor"], "subject", "{last}");
    // Pressed again, or the link opened again: already cancelled, 409.
    assert_page(
        &link.press(&url).await,
        StatusCode::CONFLICT,
        "already-cancelled",
    );
    assert_page(
        &link.open(&url).await,
        StatusCode::CONFLICT,
        "already-cancelled",
    );
    link.server.abort();
}

async fn a_wrong_token_is_a_page_and_cancels_nothing(t: TestStore) {
    let link = Link::serve(&t).await;
    let id = link.submit("carol").await;
    let other = link.submit("dave").await;
    for token in [link.key.cancel_token(other), "zz".to_owned()] {
        let url = link.url(id, &token);
        assert_page(&link.open(&url).await, StatusCode::FORBIDDEN, "wrong-token");
        assert_page(
            &link.press(&url).await,
            StatusCode::FORBIDDEN,
            "wrong-token",
        );
    }
    let bare = format!("{}/v1/requests/{id}/cancel", link.base);
    assert_page(
        &link.open(&bare).await,
        StatusCode::UNAUTHORIZED,
        "no-token",
    );
    assert_page(
        &link.press(&bare).await,
        StatusCode::UNAUTHORIZED,
        "no-token",
    );
    assert_eq!(link.status(id).await, "pending");
    // An unknown request with a token made for its id: 404.
    let unknown = RequestId::from_uuid(uuid::Uuid::now_v7());
    assert_page(
        &link.open(&link.link(unknown)).await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    link.server.abort();
}

async fn after_the_grace_period_it_is_too_late(t: TestStore) {
    let link = Link::serve(&t).await;
    let due = link.submit("erin").await;
    let rejected = link.submit("frank").await;
    let admin = EventMetadata::new("admin");
    link.requests.expedite(due, &admin, None).await.unwrap();
    link.requests
        .reject(rejected, &admin, "not a customer".to_owned())
        .await
        .unwrap();
    for (id, expected) in [(due, "too-late"), (rejected, "closed")] {
        let url = link.link(id);
        assert_page(&link.open(&url).await, StatusCode::CONFLICT, expected);
        assert_page(&link.press(&url).await, StatusCode::CONFLICT, expected);
    }
    assert_eq!(link.status(rejected).await, "rejected");
    assert_ne!(link.status(due).await, "cancelled");
    link.server.abort();
}

async fn api_clients_keep_their_json(t: TestStore) {
    let link = Link::serve(&t).await;
    let id = link.submit("gina").await;
    let response = link
        .http
        .post(link.url(id, "zz"))
        .header("content-type", "application/json")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = link
        .http
        .post(link.link(id))
        .header("content-type", "application/json")
        .body(r#"{"reason": "changed my mind"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["close_reason"], "changed my mind");
    link.server.abort();
}

support::backends!(
    get_shows_the_request_and_changes_nothing,
    the_button_cancels_and_says_so,
    a_wrong_token_is_a_page_and_cancels_nothing,
    after_the_grace_period_it_is_too_late,
    api_clients_keep_their_json,
);
