//! The feed needs `audit:read`, and the OpenAPI document describes it.

use super::sse::parse_frame;
use super::support::config::TestConfig;
use super::*;

fn token_for(scope: &str) -> String {
    format!("token-{}", scope.replace(':', "-"))
}

fn config_with_tokens() -> Config {
    let mut config = TestConfig::new();
    for scope in ["audit:read", "requests:read"] {
        config = config.token(scope, &token_hash(&token_for(scope)), &[scope]);
    }
    config.build()
}

async fn the_feed_needs_audit_read(t: TestStore) {
    let feed = Feed::with_config(t, config_with_tokens());
    let events = story(feed.store.as_ref()).await;
    settled(feed.store.as_ref(), 3).await;
    let audit = format!("Bearer {}", token_for("audit:read"));
    let reader = format!("Bearer {}", token_for("requests:read"));
    for accept in ["application/json", EVENT_STREAM] {
        let none = send(&feed.app, "/v1/events", &[("accept", accept)]).await;
        none.problem(StatusCode::UNAUTHORIZED);
        let bogus = send(
            &feed.app,
            "/v1/events",
            &[("accept", accept), ("authorization", "Bearer nope")],
        )
        .await;
        bogus.problem(StatusCode::UNAUTHORIZED);
        let wrong = send(
            &feed.app,
            "/v1/events",
            &[("accept", accept), ("authorization", &reader)],
        )
        .await;
        let body = wrong.problem(StatusCode::FORBIDDEN);
        assert!(
            body["detail"].as_str().unwrap().contains("audit:read"),
            "{body}"
        );
    }
    // Auth comes before input checks: a bad query without a token is still 401.
    send(&feed.app, "/v1/events?limit=0", &[])
        .await
        .problem(StatusCode::UNAUTHORIZED);

    let page = send(&feed.app, "/v1/events", &[("authorization", &audit)])
        .await
        .page();
    assert_eq!(page.ids(), events.iter().map(id).collect::<Vec<_>>());

    // The stream opens for the right token (its body never ends; only the head is read).
    let response = feed
        .app
        .clone()
        .oneshot(
            Request::get("/v1/events")
                .header("accept", EVENT_STREAM)
                .header("authorization", &audit)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with(EVENT_STREAM));
    let mut body = response.into_body().into_data_stream();
    let deadline = Instant::now() + PATIENCE;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("the first message")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let frame = parse_frame(&text[..text.find("\n\n").unwrap()]).unwrap();
    assert_eq!(frame.id, Some(id(&events[0])));
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document

#[tokio::test]
async fn the_openapi_document_describes_the_feed() {
    let feed = Feed::new(support::sqlite().await);
    let doc = feed.get("/openapi.json").await.json();
    let operation = &doc["paths"]["/v1/events"]["get"];
    let parameters: Vec<(&str, &str)> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    assert_eq!(
        parameters,
        [
            ("after", "query"),
            ("types", "query"),
            ("limit", "query"),
            ("wait", "query"),
            ("Last-Event-ID", "header")
        ],
        "{operation}"
    );
    let ok = operation["responses"]["200"]["content"]
        .as_object()
        .unwrap();
    assert!(ok.contains_key("application/json"), "{operation}");
    assert!(ok.contains_key(EVENT_STREAM), "{operation}");
    assert_eq!(
        ok["application/json"]["schema"]["$ref"],
        "#/components/schemas/FeedPage"
    );
    for status in ["400", "401", "403"] {
        assert!(
            operation["responses"][status].is_object(),
            "{status}: {operation}"
        );
    }
    assert_eq!(
        operation["security"],
        serde_json::json!([{"bearer": ["audit:read"]}])
    );
    let event = &doc["components"]["schemas"]["FeedEvent"]["properties"];
    for field in [
        "id",
        "event_id",
        "request_id",
        "type",
        "position",
        "version",
        "recorded_at",
        "actor",
        "correlation_id",
        "data",
    ] {
        assert!(event[field].is_object(), "FeedEvent.{field}: {event}");
    }
}
support::backends!(the_feed_needs_audit_read);
