//! `/openapi.json` describes exactly what the router serves: every documented operation is
//! routed, every method the router answers on a documented path is documented, and every
//! operation names its responses (and its scope, where it needs one).

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::requests::Requests;
use lethe_engine::secrets::MasterKey;
use tower::ServiceExt;

async fn app() -> (axum::Router, support::TestStore) {
    let store = support::sqlite().await;
    let (events, _) = store.stores();
    let app = router(AppState {
        requests: Requests::new(events, Arc::new(Config::default())),
        key: MasterKey::from_bytes([2; 32]),
    });
    (app, store)
}

/// Whether the router itself routes `method path` (a handler's own 404 is a problem+json).
async fn served(app: &axum::Router, method: &Method, path: &str) -> bool {
    let request = Request::builder()
        .method(method.clone())
        .uri(path)
        .body(Body::from("{}"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    !(status == StatusCode::METHOD_NOT_ALLOWED || (status == StatusCode::NOT_FOUND && !problem))
}

fn concrete(template: &str) -> String {
    template
        .replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{name}", "billing")
}

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let (app, _store) = app().await;
    let response = app
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 17, "{:?}", paths.keys());

    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for (template, operations) in paths {
        let operations = operations.as_object().unwrap();
        for method in &methods {
            let documented = operations.contains_key(&method.as_str().to_lowercase());
            let is_served = served(&app, method, &concrete(template)).await;
            assert_eq!(
                documented, is_served,
                "{method} {template}: documented {documented}, served {is_served}"
            );
        }
        for (method, operation) in operations {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {template} documents no response"
            );
            let public =
                ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&template.as_str());
            assert_eq!(
                operation.get("security").is_some(),
                !public,
                "{method} {template}: a protected route names its scope, a public one none"
            );
        }
    }
    // The routes the README and docs/CLEANERS.md name are all documented.
    for (method, path) in [
        ("post", "/v1/requests"),
        ("post", "/v1/requests:bulk"),
        ("get", "/v1/requests/{id}"),
        ("get", "/v1/requests/{id}/history"),
        ("post", "/v1/requests/{id}/cancel"),
        ("post", "/v1/requests/{id}/cleaners/{name}/result"),
        ("get", "/openapi.json"),
        ("get", "/metrics"),
    ] {
        assert!(
            paths[path].get(method).is_some(),
            "{method} {path} is not documented"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}
