//! Every route × every scope: a request without a token is 401, one whose token lacks the
//! route's scope is 403, and one with the right scope gets past authentication (whatever the
//! route then answers). Also: the subject's cancel token, and that with no tokens configured
//! every route is open (auth off).

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use lethe_engine::app::{Requests, Submission};
use lethe_engine::config::Config;
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use support::config::{Cleaner, TestConfig};
use tower::ServiceExt;

const SCOPES: [&str; 6] = [
    "requests:write",
    "requests:read",
    "audit:read",
    "admin",
    "cleaner:billing",
    "cleaner:crm",
];

fn token_for(scope: &str) -> String {
    format!("token-{}", scope.replace(':', "-"))
}

fn config_with_tokens() -> Config {
    let mut config = TestConfig::new()
        .cleaner(Cleaner::manual("billing"))
        .cleaner(Cleaner::manual("crm"));
    for scope in SCOPES {
        config = config.token(scope, &token_hash(&token_for(scope)), &[scope]);
    }
    config.build()
}

/// (method, path, the scope it needs or None for public routes, body)
fn routes(id: &str) -> Vec<(&'static str, String, Option<&'static str>, &'static str)> {
    let reason = r#"{"reason":"x"}"#;
    vec![
        (
            "POST",
            "/v1/requests".into(),
            Some("requests:write"),
            r#"{"subject":{"user_id":"1"}}"#,
        ),
        (
            "GET",
            format!("/v1/requests/{id}"),
            Some("requests:read"),
            "",
        ),
        (
            "GET",
            "/v1/requests?status=pending".into(),
            Some("requests:read"),
            "",
        ),
        ("GET", "/v1/stats".into(), Some("requests:read"), ""),
        ("GET", "/v1/events".into(), Some("audit:read"), ""),
        ("GET", "/dashboard".into(), Some("requests:read"), ""),
        (
            "GET",
            format!("/v1/requests/{id}/history"),
            Some("audit:read"),
            "",
        ),
        (
            "POST",
            format!("/v1/requests/{id}/cancel"),
            Some("admin"),
            "",
        ),
        (
            "POST",
            format!("/v1/requests/{id}/reject"),
            Some("admin"),
            reason,
        ),
        (
            "POST",
            format!("/v1/requests/{id}/hold"),
            Some("admin"),
            reason,
        ),
        (
            "POST",
            format!("/v1/requests/{id}/release"),
            Some("admin"),
            "",
        ),
        (
            "POST",
            format!("/v1/requests/{id}/extend"),
            Some("admin"),
            r#"{"by":"1d","reason":"x"}"#,
        ),
        (
            "POST",
            format!("/v1/requests/{id}/expedite"),
            Some("admin"),
            "",
        ),
        (
            "POST",
            format!("/v1/requests/{id}/cleaners/billing/retry"),
            Some("admin"),
            "",
        ),
        (
            "POST",
            format!("/v1/requests/{id}/cleaners/billing/skip"),
            Some("admin"),
            reason,
        ),
        (
            "POST",
            format!("/v1/requests/{id}/cleaners/billing/result"),
            Some("cleaner:billing"),
            r#"{"attempt":1,"outcome":"succeeded"}"#,
        ),
        ("GET", "/healthz".into(), None, ""),
        ("GET", "/readyz".into(), None, ""),
        ("GET", "/metrics".into(), None, ""),
    ]
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> StatusCode {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Body::from(body.to_owned())).unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn every_route_by_every_scope() {
    let store = support::sqlite().await;
    let (events, _) = store.stores();
    let config = Arc::new(config_with_tokens());
    let requests = Requests::new(events, config);
    let id = requests
        .submit(
            Submission {
                subject: [("user_id".to_owned(), "9".to_owned())].into(),
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
        .to_string();
    let app = router(AppState {
        requests,
        key: MasterKey::from_bytes([1; 32]),
    });
    let mut checked = 0;
    for (method, path, needed, body) in routes(&id) {
        let anonymous = call(&app, method, &path, None, body).await;
        let bogus = call(&app, method, &path, Some("not-a-token"), body).await;
        match needed {
            None => {
                assert!(
                    anonymous.is_success(),
                    "{method} {path} is public: {anonymous}"
                );
                continue;
            }
            Some(_) => {
                assert_eq!(
                    anonymous,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} without a token"
                );
                assert_eq!(
                    bogus,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with a bad token"
                );
            }
        }
        for scope in SCOPES {
            let status = call(&app, method, &path, Some(&token_for(scope)), body).await;
            if Some(scope) == needed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} with {scope}: {status}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} with {scope}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 16 * SCOPES.len());
}

#[tokio::test]
async fn the_subjects_cancel_token_opens_only_its_own_request() {
    let store = support::sqlite().await;
    let (events, _) = store.stores();
    let requests = Requests::new(events, Arc::new(config_with_tokens()));
    let mut ids = Vec::new();
    for n in 0..2 {
        let submitted = requests
            .submit(
                Submission {
                    subject: [("user_id".to_owned(), format!("c{n}"))].into(),
                    ..Submission::default()
                },
                None,
                "test",
            )
            .await
            .unwrap();
        ids.push(submitted.loaded.request.id);
    }
    let key = MasterKey::from_bytes([1; 32]);
    let app = router(AppState {
        requests,
        key: key.clone(),
    });
    let other_token = key.cancel_token(ids[1]);
    let path = |token: &str| format!("/v1/requests/{}/cancel?token={token}", ids[0]);
    assert_eq!(
        call(&app, "POST", &path(&other_token), None, "").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, "POST", &path("zz"), None, "").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, "POST", &path(&key.cancel_token(ids[0])), None, "").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_tokens_auth_is_off() {
    let store = support::sqlite().await;
    let (events, _) = store.stores();
    let requests = Requests::new(events, Arc::new(Config::default()));
    let app = router(AppState {
        requests,
        key: MasterKey::from_bytes([1; 32]),
    });
    let status = call(
        &app,
        "POST",
        "/v1/requests",
        None,
        r#"{"subject":{"user_id":"1"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn each_token_has_its_own_rate_limit() {
    let store = support::sqlite().await;
    let (events, _) = store.stores();
    let text = format!(
        "[api]\nrate_per_second = 1\nburst = 2\n\
         [[tokens]]\nname = \"a\"\nsha256 = \"{}\"\nscopes = [\"requests:read\"]\n\
         [[tokens]]\nname = \"b\"\nsha256 = \"{}\"\nscopes = [\"requests:read\"]\n",
        token_hash("token-a"),
        token_hash("token-b")
    );
    let app = router(AppState {
        requests: Requests::new(events, Arc::new(Config::parse(&text).unwrap())),
        key: MasterKey::from_bytes([1; 32]),
    });
    let path = format!("/v1/requests/{}", uuid::Uuid::now_v7());
    // Within the burst: the route answers (404, no such request).
    for _ in 0..2 {
        assert_eq!(
            call(&app, "GET", &path, Some("token-a"), "").await,
            StatusCode::NOT_FOUND
        );
    }
    let request = Request::get(&path)
        .header("authorization", "Bearer token-a")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Another token is not affected.
    assert_eq!(
        call(&app, "GET", &path, Some("token-b"), "").await,
        StatusCode::NOT_FOUND
    );
}
