//! `/openapi.json` describes exactly what the router serves: every documented operation is
//! routed, every method the router answers on a documented path is documented, every status
//! a route answers to hostile input is documented with its content type, and every pattern
//! in the document accepts exactly what the server's validators accept.
//! (`scripts/schemathesis/run.sh` holds a running server to the document more broadly.)

mod support;

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
    let problem = content_type.as_deref() == Some("application/problem+json");
    !(status == StatusCode::METHOD_NOT_ALLOWED || (status == StatusCode::NOT_FOUND && !problem))
}

fn concrete(template: &str, id: &str) -> String {
    template.replace("{id}", id).replace("{name}", "billing")
}

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let (app, _store) = app(false).await;
    let doc = document(&app).await;
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
            let path = concrete(template, &uuid::Uuid::now_v7().to_string());
            let is_served = served(&app, method, &path).await;
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
            // The edge checks, the time-out and the rate limit wrap every route.
            for status in ["400", "408", "414", "429", "431"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {template} does not document {status}"
                );
            }
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
    assert!(doc["components"]["securitySchemes"]["cancel_token"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    // The configured jurisdictions are the ones a submission may name.
    assert_eq!(
        doc["components"]["schemas"]["SubmitBody"]["properties"]["jurisdiction"]["enum"],
        json!(["ccpa", "gdpr", null])
    );
}

/// A body the operation at `template` takes.
fn valid_body(template: &str) -> Body {
    let body = match template.rsplit('/').next().unwrap_or_default() {
        "requests" => json!({"subject": {"user_id": "1"}}),
        "extend" => json!({"by": "1d", "reason": "r"}),
        "result" => json!({"attempt": 1, "outcome": "failed"}),
        "cancel" | "release" | "reject" | "hold" | "skip" => json!({"reason": "r"}),
        _ => json!({}),
    };
    Body::from(body.to_string())
}

/// A hostile request to a documented operation.
struct Hostile {
    what: &'static str,
    authorization: Option<&'static str>,
    id: String,
    body: Body,
}

/// Every operation, sent what the hostile suites send (no token, a token without the scope,
/// a malformed id, an unknown request, a broken or oversized body, and with no read models
/// behind the API): each answer's status is documented for the operation, with the
/// documented content type.
#[tokio::test]
async fn every_status_a_route_answers_is_documented() {
    let (app, _store) = app(true).await;
    let doc = document(&app).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut seen: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for (template, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let cases = [
                Hostile {
                    what: "no token",
                    authorization: None,
                    id: unknown.clone(),
                    body: valid_body(template),
                },
                Hostile {
                    what: "a token without the scope",
                    authorization: Some(READER),
                    id: unknown.clone(),
                    body: valid_body(template),
                },
                Hostile {
                    what: "a malformed id",
                    authorization: Some(ADMIN),
                    id: "not-a-uuid".to_owned(),
                    body: valid_body(template),
                },
                Hostile {
                    what: "an unknown request",
                    authorization: Some(ADMIN),
                    id: unknown.clone(),
                    body: valid_body(template),
                },
                Hostile {
                    what: "a body that is not JSON",
                    authorization: Some(ADMIN),
                    id: unknown.clone(),
                    body: Body::from("{\"subject\": "),
                },
                Hostile {
                    what: "a body over 64 KiB",
                    authorization: Some(ADMIN),
                    id: unknown.clone(),
                    body: Body::from(format!(r#"{{"reason": "{}"}}"#, "x".repeat(70_000))),
                },
            ];
            for case in cases {
                let mut request = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(concrete(template, &case.id))
                    .header("content-type", "application/json");
                if let Some(token) = case.authorization {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let (status, content_type, _) = send(&app, request.body(case.body).unwrap()).await;
                let documented = &operation["responses"][status.as_str()];
                assert!(
                    documented.is_object(),
                    "{method} {template} with {}: answered {status}, which is not documented",
                    case.what
                );
                let media = content_type
                    .as_deref()
                    .map(|t| t.split(';').next().unwrap().trim().to_owned());
                match (documented.get("content"), media) {
                    (Some(content), Some(media)) => assert!(
                        content.get(&media).is_some(),
                        "{method} {template} with {}: {status} came as {media}, documented {content}",
                        case.what
                    ),
                    (None, Some(media)) => {
                        panic!("{method} {template} with {}: {status} came as {media}, documented without a body", case.what)
                    }
                    (_, None) => {}
                }
                seen.entry(format!("{method} {template}"))
                    .or_default()
                    .push(status.as_u16());
            }
        }
    }
    // The cases reached what they aim at (so the assertions above were about something).
    let reached = |operation: &str, statuses: &[u16]| {
        let seen = &seen[operation];
        for status in statuses {
            assert!(seen.contains(status), "{operation} saw {seen:?}");
        }
    };
    reached("post /v1/requests", &[201, 400, 401, 403, 413]);
    reached("post /v1/requests/{id}/hold", &[400, 404, 413]);
    reached("get /v1/requests/{id}/history", &[400, 401, 403, 404]);
    reached("post /v1/requests/{id}/expedite", &[400, 401, 403, 404]);
    // This API has no read models behind it.
    assert!(
        seen["get /v1/stats"].contains(&503),
        "{:?}",
        seen["get /v1/stats"]
    );
}

/// Draws `count` strings from `strategy`, the same ones every run.
fn samples(strategy: impl Strategy<Value = String>, count: usize) -> Vec<String> {
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Strings made of `pieces`, up to `max` of them.
fn made_of(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(pieces), 0..=max).prop_map(|p| p.concat())
}

/// Characters at the edges of the text rules: white space that is and is not a control
/// character, control characters that are not white space, look-alikes of both.
const TEXT: &[&str] = &[
    "a", "Z", "0", "é", "😀", " ", "\t", "\n", "\u{b}", "\u{1c}", "\u{85}", "\u{a0}", "\u{2028}",
    "\u{3000}", "\u{feff}", "\u{200b}", "\u{7f}", "\u{0}", "\u{9f}", ",", "_", "-",
];

fn regex(doc: &Value, pointer: &str) -> regex::Regex {
    let pattern = doc
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no pattern at {pointer}"));
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 26)
        .build()
        .unwrap_or_else(|e| panic!("{pointer}: {e}"))
}

/// The length limit beside a pattern, in characters.
fn max_length(doc: &Value, pointer: &str) -> usize {
    doc.pointer(pointer)
        .and_then(Value::as_u64)
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap())
}

/// Asserts that the server refuses `value` (400 naming `field`) exactly when the document's
/// rule does not admit it.
fn check(field: &str, value: &str, admitted: bool, status: StatusCode, problem: &Value) {
    let refused = status == StatusCode::BAD_REQUEST && problem["field"].as_str() == Some(field);
    assert_eq!(
        admitted,
        !refused,
        "{field} = {value:?}: the document {} it, the server answered {status} {problem}",
        if admitted { "admits" } else { "refuses" }
    );
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn the_submission_rules_are_the_server_rules() {
    let (app, _store) = app(false).await;
    let doc = document(&app).await;
    let body = "/components/schemas/SubmitBody/properties";
    let submit = |body: Value| {
        Request::post("/v1/requests")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let long = |n: usize, c: &str| c.repeat(n);
    // Each field with the values at its length limit, then generated ones.
    let fields: [(&str, &str, usize); 4] = [
        ("source", "source", 128),
        ("reason", "reason", 1024),
        ("external_id", "external_id", 256),
        ("tags[0]", "tags/items", 64),
    ];
    for (field, at, limit) in fields {
        let pattern = regex(&doc, &format!("{body}/{at}/pattern"));
        let mut values = samples(made_of(TEXT, 8), 150);
        for c in ["a", "é", "😀"] {
            values.push(long(limit, c));
            values.push(long(limit + 1, c));
            values.push(format!("\u{85} {}\t", long(limit, c)));
        }
        for value in values {
            let mut json = json!({"subject": {"user_id": "1"}});
            if field == "tags[0]" {
                json["tags"] = json!([value]);
            } else {
                json[field] = json!(value);
            }
            let (status, _, problem) = send(&app, submit(json)).await;
            check(field, &value, pattern.is_match(&value), status, &problem);
        }
    }
    let values_at = format!("{body}/subject/additionalProperties");
    let pattern = regex(&doc, &format!("{values_at}/pattern"));
    let max = max_length(&doc, &format!("{values_at}/maxLength"));
    let mut values = samples(made_of(TEXT, 8), 150);
    values.extend([
        long(256, "😀"),
        long(257, "a"),
        format!(" {} ", long(254, "é")),
    ]);
    for value in values {
        let (status, _, problem) = send(&app, submit(json!({"subject": {"email": value}}))).await;
        let admitted = pattern.is_match(&value) && value.chars().count() <= max;
        check("subject.email", &value, admitted, status, &problem);
    }
    let kinds = regex(&doc, &format!("{body}/subject/propertyNames/pattern"));
    let kind_pieces: &[&str] = &["a", "z", "0", "_", "-", "A", "é", " ", "$"];
    let mut values = samples(made_of(kind_pieces, 34), 150);
    values.extend([long(32, "k"), long(33, "k")]);
    for kind in values {
        let (status, _, problem) = send(&app, submit(json!({"subject": {&kind: "x"}}))).await;
        let refused = status == StatusCode::BAD_REQUEST
            && problem["field"]
                .as_str()
                .is_some_and(|f| f == "subject" || f.starts_with("subject."));
        assert_eq!(
            kinds.is_match(&kind),
            !refused,
            "kind {kind:?}: {status} {problem}"
        );
    }
    let key = regex(
        &doc,
        "/paths/~1v1~1requests/post/parameters/0/schema/pattern",
    );
    let key_pieces: &[&str] = &[" ", "\t", "a", "~", "!", "k"];
    let mut keys = samples(made_of(key_pieces, 6), 100);
    keys.extend([
        long(255, "k"),
        long(256, "k"),
        format!("\t {} ", long(255, "k")),
    ]);
    for key_value in keys {
        let request = Request::post("/v1/requests")
            .header("idempotency-key", &key_value)
            .body(Body::from(json!({"subject": {"user_id": "2"}}).to_string()))
            .unwrap();
        let (status, _, problem) = send(&app, request).await;
        check(
            "Idempotency-Key",
            &key_value,
            key.is_match(&key_value),
            status,
            &problem,
        );
    }
}

#[tokio::test]
async fn the_rules_of_operations_and_the_feed_are_the_server_rules() {
    let (app, _store) = app(false).await;
    let doc = document(&app).await;
    let (status, _, submitted) = send(
        &app,
        Request::post("/v1/requests")
            .body(Body::from(r#"{"subject": {"user_id": "7"}}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = submitted["id"].as_str().unwrap().to_owned();

    let span = regex(&doc, "/components/schemas/ExtendBody/properties/by/pattern");
    let span_pieces: &[&str] = &[
        "1", "0", "12", "007", " ", "\t", "\u{a0}", "d", "day", "days", "month", "months", "x",
        "+", "é",
    ];
    let mut spans = samples(made_of(span_pieces, 6), 200);
    spans.extend(
        [
            "4294967295d",
            "4294967296d",
            "04294967295 days",
            "1 month 15 days",
        ]
        .map(String::from),
    );
    for by in spans {
        let request = Request::post(format!("/v1/requests/{id}/extend"))
            .body(Body::from(
                json!({"by": by, "reason": "complex"}).to_string(),
            ))
            .unwrap();
        let (status, _, problem) = send(&app, request).await;
        check("by", &by, span.is_match(&by), status, &problem);
    }

    let reason = "/components/schemas/RequiredReasonBody/properties/reason/pattern";
    let required = regex(&doc, reason);
    let optional = regex(
        &doc,
        "/components/schemas/ReasonBody/properties/reason/pattern",
    );
    let mut reasons = samples(made_of(TEXT, 8), 150);
    reasons.extend([
        "a".repeat(1024),
        "é".repeat(1025),
        format!("\u{85}{}\t", "😀".repeat(1024)),
    ]);
    for value in reasons {
        for (operation, pattern) in [("hold", &required), ("release", &optional)] {
            let request = Request::post(format!("/v1/requests/{id}/{operation}"))
                .body(Body::from(json!({"reason": value}).to_string()))
                .unwrap();
            let (status, _, problem) = send(&app, request).await;
            check("reason", &value, pattern.is_match(&value), status, &problem);
        }
    }

    let name = regex(
        &doc,
        "/paths/~1v1~1requests~1{id}~1cleaners~1{name}~1retry/post/parameters/1/schema/pattern",
    );
    let name_pieces: &[&str] = &["a", "z", "0", "_", "-", "B", " ", "é", "."];
    let mut names = samples(made_of(name_pieces, 66), 150);
    names.extend([
        format!("a{}", "b".repeat(63)),
        format!("a{}", "b".repeat(64)),
    ]);
    for cleaner in names {
        let unknown = uuid::Uuid::now_v7();
        let uri = format!("/v1/requests/{unknown}/cleaners/{}/retry", encode(&cleaner));
        let (status, _, problem) =
            send(&app, Request::post(uri).body(Body::empty()).unwrap()).await;
        check("name", &cleaner, name.is_match(&cleaner), status, &problem);
    }

    let feed = "/paths/~1v1~1events/get/parameters";
    let after = regex(&doc, &format!("{feed}/0/schema/pattern"));
    let types = regex(&doc, &format!("{feed}/1/schema/pattern"));
    let last_event_id = regex(&doc, &format!("{feed}/4/schema/pattern"));
    let checkpoint_pieces: &[&str] = &[
        "0",
        "1",
        "42",
        "-",
        "+",
        " ",
        "\t",
        "a",
        "00",
        "9223372036854775807",
        "9223372036854775808",
        "\u{a0}",
    ];
    let mut checkpoints = samples(made_of(checkpoint_pieces, 5), 200);
    checkpoints.extend(["0--0", "-0-1", "+1-+2", "1-9223372036854775807"].map(String::from));
    for value in &checkpoints {
        let uri = format!("/v1/events?after={}", encode(value));
        let (status, _, problem) = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        check("after", value, after.is_match(value), status, &problem);
        if value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
            let request = Request::get("/v1/events")
                .header("last-event-id", value.as_str())
                .body(Body::empty())
                .unwrap();
            let (status, _, problem) = send(&app, request).await;
            check(
                "Last-Event-ID",
                value,
                last_event_id.is_match(value),
                status,
                &problem,
            );
        }
    }
    let type_pieces: &[&str] = &[
        "Due",
        "Completed",
        "Received",
        ",",
        " ",
        "\u{a0}",
        "due",
        "x",
    ];
    for value in samples(made_of(type_pieces, 5), 150) {
        let uri = format!("/v1/events?types={}", encode(&value));
        let (status, _, problem) = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        check("types", &value, types.is_match(&value), status, &problem);
    }
}
