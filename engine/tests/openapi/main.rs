//! `/openapi.json` describes exactly what the router serves: every documented operation is
//! routed, every method the router answers on a documented path is documented, every status
//! a route answers to hostile input is documented with its content type, and every pattern
//! in the document accepts exactly what the server's validators accept.
//! (`scripts/schemathesis/run.sh` holds a running server to the document more broadly.)

#[path = "../support/mod.rs"]
mod support;

mod routes;
mod rules;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use lethe_engine::app::Requests;
use lethe_engine::config::{Config, TokenConfig};
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};
use tower::ServiceExt;

const ADMIN: &str = "admin-token";
const READER: &str = "reader-token";

fn token(name: &str, secret: &str, scopes: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.to_owned(),
        sha256: token_hash(secret),
        sha256_env: None,
        sha256_file: None,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The API over SQLite; with `tokens`, auth is on (`ADMIN` has every scope, `READER` one).
async fn app(tokens: bool) -> (axum::Router, support::TestStore) {
    let store = support::sqlite().await;
    let (events, _) = store.stores();
    let mut config = Config::default();
    if tokens {
        config.tokens = vec![
            token(
                "admin",
                ADMIN,
                &[
                    "requests:write",
                    "requests:read",
                    "audit:read",
                    "admin",
                    "cleaner:billing",
                ],
            ),
            token("reader", READER, &["requests:read"]),
        ];
    }
    let app = router(AppState {
        requests: Requests::new(events, Arc::new(config)),
        key: MasterKey::from_bytes([2; 32]),
    });
    (app, store)
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, body)
}

async fn document(app: &axum::Router) -> Value {
    let (status, _, doc) = send(
        app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    doc
}

/// Whether the router itself routes `method path` (a handler's own 404 is a problem+json).
async fn served(app: &axum::Router, method: &Method, path: &str) -> bool {
    let request = Request::builder()
        .method(method.clone())
        .uri(path)
        .body(Body::from("{}"))
        .unwrap();
    let (status, content_type, _) = send(app, request).await;
    // A route's own 404 is a problem, or a page for people (the cancel page).
    let answered = content_type
        .as_deref()
        .is_some_and(|t| t == "application/problem+json" || t.starts_with("text/html"));
    !(status == StatusCode::METHOD_NOT_ALLOWED || (status == StatusCode::NOT_FOUND && !answered))
}

fn concrete(template: &str, id: &str) -> String {
    template.replace("{id}", id).replace("{name}", "billing")
}
