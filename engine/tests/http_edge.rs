//! The edge of the API, finding by finding, on a real server over a raw socket and on both
//! backends: a body is one JSON value; NUL and invalid UTF-8 in a query or path are a 400
//! naming the parameter; unknown routes, wrong methods and Lethe's header limits answer
//! problems; a caller without a token is refused before its body is read; a declared length
//! over the limit is refused at once; a body that stops half-way is a 408 problem; admin
//! reasons refuse control characters as submission fields do.

#[path = "hostile/raw.rs"]
mod raw;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use raw::{exchange, request, Reply};
use serde_json::Value;
use support::config::{Cleaner, TestConfig};
use support::TestStore;
use tower::ServiceExt as _;

const ADMIN: &str = "edge-admin";
const READER: &str = "edge-reader";

struct Server {
    address: SocketAddr,
    id: String,
    store: TestStore,
}

fn config(tokens: bool) -> Config {
    let mut config = TestConfig::new().cleaner(Cleaner::manual("billing"));
    if tokens {
        config = config
            .token(
                "admin",
                &token_hash(ADMIN),
                &["requests:write", "admin", "cleaner:billing"],
            )
            .token("reader", &token_hash(READER), &["requests:read"]);
    }
    config.build()
}

fn app(store: &TestStore, tokens: bool) -> (axum::Router, Requests) {
    let database = store.database();
    let key = MasterKey::from_bytes([3; 32]);
    let requests = Requests::new(database.events.clone(), Arc::new(config(tokens)))
        .with_projections(database.projections.clone());
    let app = router(AppState {
        requests: requests.clone(),
        key,
    });
    (app, requests)
}

async fn start(store: TestStore, tokens: bool) -> Server {
    let (app, requests) = app(&store, tokens);
    let subject = [("user_id".to_owned(), "edge-1".to_owned())].into();
    let id = support::due::submitted(&requests, subject)
        .await
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(lethe_engine::http::serve(
        listener,
        app,
        std::future::pending(),
    ));
    Server { address, id, store }
}

impl Server {
    async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Reply {
        exchange(
            self.address,
            &request(method, target.as_bytes(), headers, body),
            method == "HEAD",
        )
        .await
        .expect("an answer")
    }

    async fn events(&self) -> i64 {
        self.store
            .fetch_integers("SELECT COUNT(*) FROM events")
            .await[0]
    }
}

/// Checks `reply` is a problem with `status` and returns it.
fn problem(reply: &Reply, status: u16) -> Value {
    assert_eq!(
        reply.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let problem = reply.json();
    assert_eq!(problem["status"], status);
    problem
}

async fn a_body_is_exactly_one_json_value(store: TestStore) {
    let server = start(store, false).await;
    let before = server.events().await;
    for body in [
        &br#"{"subject":{"a":"b"}}garbage"#[..],
        br#"{"subject":{"a":"b"}}{"subject":{"a":"b"}}"#,
        b"{\"subject\":{\"a\":\"b\"}}\n{\"subject\":{\"a\":\"c\"}}\n",
    ] {
        let reply = server.send("POST", "/v1/requests", &[], body).await;
        assert_eq!(problem(&reply, 400)["field"], "body");
        let hold = format!("/v1/requests/{}/hold", server.id);
        let reply = server
            .send("POST", &hold, &[], br#"{"reason":"x"} {"reason":"y"}"#)
            .await;
        assert_eq!(problem(&reply, 400)["field"], "body");
    }
    assert_eq!(server.events().await, before, "nothing was recorded");
    let reply = server
        .send(
            "POST",
            "/v1/requests",
            &[],
            b"{\"subject\":{\"a\":\"b\"}}\r\n \t",
        )
        .await;
    assert_eq!(reply.status, 201, "whitespace after the value is fine");
}

async fn nul_or_invalid_utf8_in_a_query_or_path_is_a_400_naming_it(store: TestStore) {
    let server = start(store, false).await;
    for (method, target, field) in [
        (
            "GET",
            "/v1/requests?jurisdiction=%00".to_owned(),
            "jurisdiction",
        ),
        (
            "GET",
            "/v1/requests?jurisdiction=gd%00pr".to_owned(),
            "jurisdiction",
        ),
        (
            "GET",
            "/v1/requests?jurisdiction=%C0%80".to_owned(),
            "jurisdiction",
        ),
        (
            "GET",
            "/v1/requests?status=pending&external=%FF".to_owned(),
            "external",
        ),
        ("GET", "/v1/requests?%C0%80=1".to_owned(), "query"),
        ("GET", "/v1/events?types=Due%00".to_owned(), "types"),
        ("GET", "/v1/stats?x=%0A".to_owned(), "x"),
        (
            "POST",
            format!("/v1/requests/{}/cancel?token=a%00", server.id),
            "token",
        ),
        (
            "POST",
            "/v1/requests?jurisdiction=%00".to_owned(),
            "jurisdiction",
        ),
        ("GET", "/v1/requests/%00".to_owned(), "path"),
        ("GET", "/v1/requests/%C0%80/history".to_owned(), "path"),
    ] {
        let reply = server.send(method, &target, &[], b"").await;
        assert_eq!(problem(&reply, 400)["field"], field, "{target}");
    }
    // A well-formed query still works, '+' and UTF-8 included.
    let reply = server
        .send(
            "GET",
            "/v1/requests?jurisdiction=gdpr&status=pending",
            &[],
            b"",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["items"].as_array().map(Vec::len), Some(0));
}

async fn unknown_routes_wrong_methods_and_header_limits_are_problems(store: TestStore) {
    let server = start(store, false).await;
    let reply = server.send("GET", "/v2/nothing", &[], b"").await;
    assert_eq!(problem(&reply, 404)["type"], "urn:lethe:problem:not-found");
    let reply = server.send("DELETE", "/v1/requests", &[], b"").await;
    let allowed = problem(&reply, 405);
    assert_eq!(allowed["type"], "urn:lethe:problem:method-not-allowed");
    let allow = reply.header("allow").expect("an Allow header");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let reply = server.send("GET", "/v1/requests:bulk", &[], b"").await;
    problem(&reply, 405);

    let many: Vec<(String, Vec<u8>)> = (0..150)
        .map(|i| (format!("X-Many-{i}"), b"1".to_vec()))
        .collect();
    let many: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let reply = server.send("GET", "/healthz", &many, b"").await;
    assert_eq!(
        problem(&reply, 431)["type"],
        "urn:lethe:problem:headers-too-large"
    );
    let big = vec![b'a'; 40 * 1024];
    let reply = server
        .send("GET", "/healthz", &[("X-Big", &big)], b"")
        .await;
    problem(&reply, 431);
    let long = format!("/healthz?a={}", "b".repeat(9 * 1024));
    let reply = server.send("GET", &long, &[], b"").await;
    problem(&reply, 414);
    // Beyond hyper's own ceiling there is no request to answer: hyper's bare 431 (ADR 13).
    let huge = vec![b'a'; 1024 * 1024];
    let reply = server
        .send("GET", "/healthz", &[("X-Huge", &huge)], b"")
        .await;
    assert_eq!(reply.status, 431);
    assert!(reply.body.is_empty(), "{reply:?}");
    // And the server is still there.
    assert_eq!(server.send("GET", "/healthz", &[], b"").await.status, 200);
}

async fn without_a_token_the_body_is_never_read(store: TestStore) {
    let server = start(store, true).await;
    let id = &server.id;
    let huge = b"10000000000".as_slice();
    for (target, body) in [
        ("/v1/requests".to_owned(), &b"garbage"[..]),
        ("/v1/requests".to_owned(), &[b'{'; 70 * 1024][..]),
        (format!("/v1/requests/{id}/hold"), b"{"),
        (format!("/v1/requests/{id}/extend"), b"[]"),
        (format!("/v1/requests/{id}/cancel"), b"{"),
        (format!("/v1/requests/{id}/cleaners/billing/result"), b"{"),
    ] {
        let reply = server.send("POST", &target, &[], body).await;
        assert_eq!(
            problem(&reply, 401)["type"],
            "urn:lethe:problem:unauthorized",
            "{target}"
        );
        // A declared length that would be refused is not even looked at.
        let reply = server
            .send("POST", &target, &[("Content-Length", huge)], b"")
            .await;
        problem(&reply, 401);
        // A token without the scope: 403, also before the body.
        let bearer = format!("Bearer {READER}");
        let reply = server
            .send(
                "POST",
                &target,
                &[("Authorization", bearer.as_bytes())],
                body,
            )
            .await;
        problem(&reply, 403);
    }
    let reply = server
        .send(
            "POST",
            "/v1/requests:bulk",
            &[("Content-Length", huge)],
            b"",
        )
        .await;
    problem(&reply, 401);
}

async fn a_declared_length_over_the_limit_is_refused_at_once(store: TestStore) {
    let server = start(store, true).await;
    let bearer = format!("Bearer {ADMIN}");
    let hold = format!("/v1/requests/{}/hold", server.id);
    for target in ["/v1/requests", hold.as_str()] {
        let headers: [(&str, &[u8]); 2] = [
            ("Authorization", bearer.as_bytes()),
            ("Content-Length", b"10000000000"),
        ];
        // Not a byte of the body is sent: the answer must not wait for it (the request
        // time-out is 30 s; this allows 5).
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            server.send("POST", target, &headers, b""),
        )
        .await
        .expect("answered before the body arrives");
        assert_eq!(problem(&reply, 413)["type"], "urn:lethe:problem:too-large");
    }
}

async fn admin_reasons_refuse_control_characters(store: TestStore) {
    let server = start(store, false).await;
    let id = &server.id;
    let before = server.events().await;
    for operation in [
        "hold",
        "reject",
        "cancel",
        "release",
        "cleaners/billing/skip",
    ] {
        for reason in [r"a\u0000b", r"a\u001b[2Jb", r"line\nbreak", r"a\u0085b"] {
            let body = format!(r#"{{"reason":"{reason}"}}"#);
            let target = format!("/v1/requests/{id}/{operation}");
            let reply = server.send("POST", &target, &[], body.as_bytes()).await;
            let problem = problem(&reply, 400);
            assert_eq!(problem["field"], "reason", "{operation} {reason}");
            assert!(problem["detail"]
                .as_str()
                .unwrap()
                .contains("control characters"));
        }
    }
    let target = format!("/v1/requests/{id}/extend");
    let reply = server
        .send(
            "POST",
            &target,
            &[],
            br#"{"by":"1 month","reason":"a\u0000b"}"#,
        )
        .await;
    assert_eq!(problem(&reply, 400)["field"], "reason");
    assert_eq!(server.events().await, before, "nothing was recorded");
    // A clean reason still goes through.
    let target = format!("/v1/requests/{id}/hold");
    let reply = server
        .send("POST", &target, &[], br#"{"reason":"litigation"}"#)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "on_hold");
}

/// A body that stops half-way: the request time-out's 408 becomes a problem. The layers are
/// stacked as `router` stacks them, with a time-out of 50 ms instead of 30 s.
#[tokio::test]
async fn a_body_that_stops_half_way_is_a_408_problem() {
    use axum::http::StatusCode;
    use tower_http::timeout::TimeoutLayer;
    let app = axum::Router::new()
        .route(
            "/v1/requests",
            axum::routing::post(|_: axum::body::Bytes| async { "read" }),
        )
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn(
                    lethe_engine::http::edge::problems,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_millis(50),
                )),
        );
    let half = futures::stream::iter([Ok::<_, std::io::Error>(b"{\"subject\":".to_vec())])
        .chain(futures::stream::pending());
    let request = axum::http::Request::post("/v1/requests")
        .body(Body::from_stream(half))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), app.oneshot(request))
        .await
        .expect("the time-out answers")
        .unwrap();
    assert_eq!(response.status(), 408);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 408);
    assert_eq!(problem["type"], "urn:lethe:problem:timeout");
}

use futures::StreamExt as _;

support::backends!(
    a_body_is_exactly_one_json_value,
    nul_or_invalid_utf8_in_a_query_or_path_is_a_400_naming_it,
    unknown_routes_wrong_methods_and_header_limits_are_problems,
    without_a_token_the_body_is_never_read,
    a_declared_length_over_the_limit_is_refused_at_once,
    admin_reasons_refuse_control_characters,
);
