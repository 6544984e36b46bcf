//! The document and the router agree: every route, method and status.

use super::*;

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
            let public = [
                "/healthz",
                "/readyz",
                "/metrics",
                "/openapi.json",
                "/v1/receipt-keys",
            ]
            .contains(&template.as_str());
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
        ("get", "/v1/reports/annual"),
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
/// a malformed id, an unknown request, a broken or oversized body, and with no projections
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
    reached("get /v1/reports/annual", &[400, 401, 403]);
    // This API has no projections behind it.
    assert!(
        seen["get /v1/stats"].contains(&503),
        "{:?}",
        seen["get /v1/stats"]
    );
}
