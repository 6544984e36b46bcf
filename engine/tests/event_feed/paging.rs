//! Paging with `after`/`next`, the `types` filter, and bad input.

use super::*;

async fn paging_returns_every_event_once_in_order(t: TestStore) {
    let feed = Feed::new(t);
    let empty = feed.page("/v1/events").await;
    assert!(empty.events.is_empty());
    assert_eq!(empty.next, Checkpoint::START.to_string());

    for _ in 0..7 {
        story(feed.store.as_ref()).await;
    }
    let expected = settled(feed.store.as_ref(), 21).await;

    // In pages of 4, from the start.
    let (seen, next) = feed.walk("limit=4", 4, None).await;
    assert_eq!(seen.len(), expected.len());
    for (json, event) in seen.iter().zip(&expected) {
        assert_presents(json, event);
    }
    assert_eq!(next, id(expected.last().unwrap()));

    // Full pages are full: 21 events in pages of 4 are 5 pages of 4 and one of 1.
    let first = feed.page("/v1/events?limit=4").await;
    assert_eq!(
        first.ids(),
        expected[..4].iter().map(id).collect::<Vec<_>>()
    );
    assert_eq!(first.next, id(&expected[3]));

    // The default page holds them all (at most 100), and `after` any event continues after it.
    let all = feed.page("/v1/events").await;
    assert_eq!(all.ids(), expected.iter().map(id).collect::<Vec<_>>());
    let rest = feed
        .page(&format!("/v1/events?after={}", id(&expected[9])))
        .await;
    assert_eq!(
        rest.ids(),
        expected[10..].iter().map(id).collect::<Vec<_>>()
    );

    // From the end: nothing, and `next` stays.
    let end = id(expected.last().unwrap());
    let nothing = feed.page(&format!("/v1/events?after={end}")).await;
    assert!(nothing.events.is_empty());
    assert_eq!(nothing.next, end);

    // `Accept: application/json` is the same JSON page.
    let reply = send(
        &feed.app,
        "/v1/events?limit=2",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(
        reply.page().ids(),
        expected[..2].iter().map(id).collect::<Vec<_>>()
    );
}

async fn types_filter_and_next_moves_past_skipped_events(t: TestStore) {
    let feed = Feed::new(t);
    for _ in 0..7 {
        story(feed.store.as_ref()).await;
    }
    // The log ends with an event the filter skips.
    append_stream(feed.store.as_ref(), &[reminded()]).await;
    let expected = settled(feed.store.as_ref(), 22).await;
    let end = id(expected.last().unwrap());
    assert_eq!(expected.last().unwrap().event_type, "Reminded");
    let wanted: Vec<&RecordedEvent> = expected
        .iter()
        .filter(|e| e.event_type == "Due" || e.event_type == "Completed")
        .collect();
    assert_eq!(wanted.len(), 14);

    let (seen, next) = feed.walk("types=Due,Completed&limit=3", 3, None).await;
    assert_eq!(seen.len(), wanted.len());
    for (json, event) in seen.iter().zip(&wanted) {
        assert_presents(json, event);
    }
    // The walk ended past the trailing skipped event: nothing is read twice.
    assert_eq!(next, end);

    // One page: the first three wanted events; next is the last of them (not further, since
    // the page is full and what follows was not looked at).
    let page = feed.page("/v1/events?types=Due,Completed&limit=3").await;
    assert_eq!(
        page.ids(),
        wanted[..3].iter().map(|e| id(e)).collect::<Vec<_>>()
    );
    assert_eq!(page.next, id(wanted[2]));

    // After the last wanted event only skipped ones remain: an empty page, next at the end.
    let last_wanted = id(wanted.last().unwrap());
    let page = feed
        .page(&format!(
            "/v1/events?types=Due,Completed&after={last_wanted}"
        ))
        .await;
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, end);

    // A type that never occurs: one empty page that has read the whole log.
    let page = feed.page("/v1/events?types=Cancelled").await;
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, end);

    // Spaces around names are fine; one type.
    let page = feed.page("/v1/events?types=%20Reminded%20").await;
    assert_eq!(
        page.ids(),
        expected
            .iter()
            .filter(|e| e.event_type == "Reminded")
            .map(id)
            .collect::<Vec<_>>()
    );
}

/// Request headers, by name.
type Headers<'a> = Vec<(&'a str, &'a str)>;

async fn bad_input_is_a_problem_naming_the_field(t: TestStore) {
    let feed = Feed::new(t);
    let sse = ("accept", EVENT_STREAM);
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("after=abc", vec![], "after"),
        ("after=42", vec![], "after"),
        ("after=1-x", vec![], "after"),
        ("after=-1-5", vec![], "after"),
        ("after=", vec![], "after"),
        ("types=Nope", vec![], "types"),
        ("types=Due,Nope", vec![], "types"),
        ("types=due", vec![], "types"),
        ("types=", vec![], "types"),
        ("types=Due,", vec![], "types"),
        ("limit=0", vec![], "limit"),
        ("limit=1001", vec![], "limit"),
        ("limit=ten", vec![], "limit"),
        ("limit=-1", vec![], "limit"),
        ("wait=61", vec![], "wait"),
        ("wait=-1", vec![], "wait"),
        ("wait=1.5", vec![], "wait"),
        ("", vec![("last-event-id", "yesterday")], "Last-Event-ID"),
        ("", vec![sse, ("last-event-id", "7")], "Last-Event-ID"),
        ("types=Nope", vec![sse], "types"),
        ("limit=0", vec![sse], "limit"),
        ("after=x", vec![sse, ("last-event-id", "0-1")], "after"),
        ("colour=blue", vec![], "query"),
    ];
    for (query, headers, field) in cases {
        let reply = send(&feed.app, &format!("/v1/events?{query}"), &headers).await;
        let body = reply.problem(StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], field, "{query} {headers:?}: {body}");
        assert_eq!(body["type"], "urn:lethe:problem:invalid-input");
        assert!(
            body["detail"].as_str().unwrap().starts_with(field),
            "{query}: {body}"
        );
    }
    // The bounds themselves are fine.
    for query in [
        "limit=1",
        "limit=1000",
        "wait=0",
        "after=0-0",
        "types=Shredded",
    ] {
        feed.page(&format!("/v1/events?{query}")).await;
    }
    // An unknown type's problem lists the known ones.
    let body = feed
        .get("/v1/events?types=Nope")
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Due, CleanerSucceeded"),
        "{body}"
    );
}
support::backends!(
    paging_returns_every_event_once_in_order,
    types_filter_and_next_moves_past_skipped_events,
    bad_input_is_a_problem_naming_the_field,
);
