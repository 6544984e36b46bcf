//! Through the router: the page, its tokens, and an engine without projections.

use super::*;

pub(crate) async fn send(
    app: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

pub(crate) fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

pub(crate) fn with_cookie(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

async fn the_page_shows_the_stats(store: TestStore) {
    let (app, seeded) = seeded(&store, config_with_tokens()).await;
    let (status, _, body) = send(&app, get("/v1/stats", Some(READER))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_known_workload(&stats);

    let (status, headers, html) = send(&app, get("/dashboard", Some(READER))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"));
    assert!(!html.contains("<script"), "the page needs no script");
    assert_page_matches_stats(&html, &stats);
    assert!(
        figures(&html).len() >= 30,
        "every figure of the workload is shown"
    );

    assert_eq!(listed(&html, "overdue"), [seeded.overdue.to_string()]);
    assert_eq!(
        listed(&html, "at-risk"),
        seeded.at_risk.map(|id| id.to_string()),
        "most urgent first"
    );
    // The completion chart has a bar pair per month with completions in the last year.
    let months = stats["completion"].as_object().unwrap().len();
    assert!(months >= 2, "the workload completes in several months");
    assert_eq!(html.matches("<rect class=\"median\"").count(), months);
}

#[tokio::test]
async fn tokens_by_header_query_and_cookie() {
    let store = support::sqlite().await;
    let (app, _) = seeded(&store, config_with_tokens()).await;

    // No token, a bad token, a token without requests:read: HTML pages, not JSON.
    let (status, headers, body) = send(&app, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    assert!(
        body.contains("requests:read") && body.contains("?token="),
        "{body}"
    );
    assert!(!body.contains("data-stat"));
    let (status, _, _) = send(&app, get("/dashboard", Some("not-a-token"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, body) = send(&app, get("/dashboard", Some(ADMIN))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.contains("lacks the scope"), "{body}");

    // ?token= with a good token: 303 to /dashboard with the token in an HttpOnly cookie.
    let (status, headers, _) = send(&app, get(&format!("/dashboard?token={READER}"), None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard");
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set_cookie.starts_with(&format!("lethe_token={READER};")),
        "{set_cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP here");
    let cookie = set_cookie.split(';').next().unwrap();
    let (status, _, html) = send(&app, with_cookie("/dashboard", &format!("a=1; {cookie}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-stat=\"total\""));
    // Behind a TLS-terminating proxy the cookie is Secure.
    let request = Request::get(format!("/dashboard?token={READER}"))
        .header("x-forwarded-proto", "https")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(&app, request).await;
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    // ?token= with a bad or under-scoped token: no cookie.
    for (token, expected) in [
        ("nope", StatusCode::UNAUTHORIZED),
        ("a%3Bb", StatusCode::UNAUTHORIZED),
        (ADMIN, StatusCode::FORBIDDEN),
    ] {
        let (status, headers, _) =
            send(&app, get(&format!("/dashboard?token={token}"), None)).await;
        assert_eq!(status, expected, "?token={token}");
        assert!(!headers.contains_key(header::SET_COOKIE));
    }
    // A stale cookie is refused and cleared; an under-scoped one is refused.
    let (status, headers, _) = send(&app, with_cookie("/dashboard", "lethe_token=revoked")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _, _) = send(
        &app,
        with_cookie("/dashboard", &format!("lethe_token={ADMIN}")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn without_tokens_the_page_is_open() {
    let store = support::sqlite().await;
    let (app, _) = seeded(&store, Config::default()).await;
    let (status, _, html) = send(&app, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, body) = send(&app, get("/v1/stats", None)).await;
    assert_page_matches_stats(&html, &serde_json::from_str(&body).unwrap());
    // A token in the address is dropped from it; there is nothing to keep.
    let (status, headers, _) = send(&app, get("/dashboard?token=whatever", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!headers.contains_key(header::SET_COOKIE));
}

#[tokio::test]
async fn an_empty_engine_and_one_without_projections() {
    let store = support::sqlite().await;
    let database = store.database();
    let app = router(AppState {
        requests: engine(&database, Config::default()),
        key: MasterKey::from_bytes([7; 32]),
    });
    let (status, _, html) = send(&app, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No request has completed yet."));
    assert!(html.contains("Nothing is overdue."));
    let (_, _, body) = send(&app, get("/v1/stats", None)).await;
    assert_page_matches_stats(&html, &serde_json::from_str(&body).unwrap());

    let app = router(AppState {
        requests: Requests::new(database.events.clone(), Arc::new(Config::default())),
        key: MasterKey::from_bytes([7; 32]),
    });
    let (status, headers, body) = send(&app, get("/dashboard", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.contains("no projections"), "{body}");
}
support::backends!(the_page_shows_the_stats);
