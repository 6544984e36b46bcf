//! The HTTP event feed (`GET /v1/events`) on both backends (real Postgres, real SQLite):
//! paging with `after`/`next` returns every event exactly once and in the order of the gap-safe
//! global read; `types` filters while `next` still moves past the skipped events; bad input is
//! a 400 naming the parameter; a long-poll answers as soon as an event is appended (and empty
//! after `wait` when none is); Server-Sent Events over a real socket deliver events as they are
//! appended, and a client that reconnects with `Last-Event-ID` continues exactly after its last
//! event; the feed needs the `audit:read` scope. On Postgres, an open transaction holds the feed
//! back rather than letting it skip past an event that may still commit.

mod support;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chrono::{TimeZone, Utc};
use futures::{Stream, StreamExt as _};
use lethe_domain::event::{Cancelled, Completed, Due, Reminded};
use lethe_domain::{Event, RequestId};
use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::http::auth::token_hash;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{Appended, Checkpoint, EventMetadata, EventStore, RecordedEvent};
use serde_json::Value;
use support::TestStore;
use tokio::time::Instant;
use tower::ServiceExt as _;
use uuid::Uuid;

const PROBLEM_JSON: &str = "application/problem+json";
const EVENT_STREAM: &str = "text/event-stream";
/// How long any one expectation may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Fixtures

fn at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn reminded() -> Event {
    Event::Reminded(Reminded { index: 0, at: at() })
}

fn due() -> Event {
    Event::Due(Due {
        at: at(),
        cleaners: Vec::new(),
        expedited: false,
    })
}

fn completed() -> Event {
    Event::Completed(Completed { at: at() })
}

fn cancelled() -> Event {
    Event::Cancelled(Cancelled {
        at: at(),
        reason: Some("changed their mind".to_owned()),
    })
}

/// Appends `events` to a new stream, one append (and transaction) per event; returns them.
async fn append_stream(store: &dyn EventStore, events: &[Event]) -> Vec<RecordedEvent> {
    let id = RequestId::from_uuid(Uuid::now_v7());
    let metadata = EventMetadata::new("system:test");
    let mut written = Vec::new();
    for (version, event) in (0_i64..).zip(events) {
        match store
            .append(id, version, std::slice::from_ref(event), &metadata)
            .await
            .unwrap()
        {
            Appended::Written(events) => written.extend(events),
            Appended::Duplicate(record) => panic!("unexpected duplicate {record:?}"),
        }
    }
    written
}

/// A request's typical tail: reminded, due, completed (three events).
async fn story(store: &dyn EventStore) -> Vec<RecordedEvent> {
    append_stream(store, &[reminded(), due(), completed()]).await
}

/// The whole global log once the gap-safe read shows exactly `expected` events. On Postgres the
/// read stops below the oldest transaction open anywhere in the cluster, so events just
/// committed may take a moment to show.
async fn settled(store: &dyn EventStore, expected: usize) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut all = Vec::new();
        let mut after = Checkpoint::START;
        loop {
            let batch = store.read_all(after, 500).await.unwrap();
            let Some(last) = batch.last() else { break };
            after = last.checkpoint();
            all.extend(batch);
        }
        assert!(
            all.len() <= expected,
            "the log holds {} events, more than {expected}",
            all.len()
        );
        if all.len() == expected {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "the global read shows {} of {expected} events",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn id(event: &RecordedEvent) -> String {
    event.checkpoint().to_string()
}

/// Checks a feed event (JSON) presents `expected`, field by field, and has no other fields.
fn assert_presents(json: &Value, expected: &RecordedEvent) {
    let fields: Vec<&str> = json
        .as_object()
        .unwrap_or_else(|| panic!("{json} is not an object"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "actor",
            "correlation_id",
            "data",
            "event_id",
            "id",
            "position",
            "recorded_at",
            "request_id",
            "type",
            "version"
        ],
        "{json}"
    );
    assert_eq!(json["id"], id(expected), "{json}");
    assert_eq!(json["event_id"], expected.event_id.to_string(), "{json}");
    assert_eq!(json["request_id"], expected.stream_id.to_string(), "{json}");
    assert_eq!(json["type"], expected.event_type, "{json}");
    assert_eq!(json["position"], expected.position, "{json}");
    assert_eq!(json["version"], expected.version, "{json}");
    let recorded_at: chrono::DateTime<Utc> =
        serde_json::from_value(json["recorded_at"].clone()).unwrap();
    assert_eq!(recorded_at, expected.recorded_at, "{json}");
    assert_eq!(json["actor"], expected.actor, "{json}");
    assert_eq!(
        json["correlation_id"],
        expected.correlation_id.to_string(),
        "{json}"
    );
    assert_eq!(json["data"], expected.payload, "{json}");
}

/// A response, fully read.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} {:?} is not JSON: {e}", self.status, self.text))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// Checks this is a 200 JSON page; returns it.
    fn page(&self) -> Page {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert!(
            self.content_type().starts_with("application/json"),
            "{self:?}"
        );
        let body = self.json();
        let object = body.as_object().unwrap();
        assert_eq!(object.len(), 2, "only events and next: {body}");
        Page {
            events: body["events"].as_array().unwrap().clone(),
            next: body["next"].as_str().unwrap().to_owned(),
        }
    }

    /// Checks this is an RFC 9457 problem with `status`; returns its body.
    fn problem(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type(), PROBLEM_JSON, "{self:?}");
        let body = self.json();
        assert_eq!(body["status"], status.as_u16(), "{self:?}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        body
    }
}

#[derive(Debug)]
struct Page {
    events: Vec<Value>,
    next: String,
}

impl Page {
    fn ids(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn send(app: &Router, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// The router over a fresh store.
struct Feed {
    app: Router,
    store: Arc<dyn EventStore>,
    _t: TestStore,
}

impl Feed {
    fn new(t: TestStore) -> Self {
        Self::with_config(t, Config::default())
    }

    fn with_config(t: TestStore, config: Config) -> Self {
        let store = t.store();
        let app = router(AppState {
            requests: Requests::new(store.clone(), Arc::new(config)),
            key: MasterKey::from_bytes([7; 32]),
        });
        Self { app, store, _t: t }
    }

    async fn get(&self, path: &str) -> Reply {
        send(&self.app, path, &[]).await
    }

    async fn page(&self, path: &str) -> Page {
        self.get(path).await.page()
    }

    /// Every page from the start (or `after`) with `query`, until an empty one; checks each
    /// page's size and that the final empty page repeats the cursor. Returns every event seen
    /// and the final cursor.
    async fn walk(&self, query: &str, limit: usize, after: Option<&str>) -> (Vec<Value>, String) {
        let mut after = after.map(str::to_owned);
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let path = match &after {
                None => format!("/v1/events?{query}"),
                Some(after) => format!("/v1/events?{query}&after={after}"),
            };
            let page = self.page(&path).await;
            assert!(page.events.len() <= limit, "{path}: {page:?}");
            if page.events.is_empty() {
                if let Some(after) = &after {
                    assert_eq!(&page.next, after, "{path}: nothing new, next stays");
                }
                return (seen, page.next);
            }
            let last: Checkpoint = page.ids().last().unwrap().parse().unwrap();
            let next: Checkpoint = page.next.parse().unwrap();
            assert!(next >= last, "{path}: next is at or past the last event");
            if let Some(after) = &after {
                let after: Checkpoint = after.parse().unwrap();
                let first: Checkpoint = page.ids()[0].parse().unwrap();
                assert!(first > after, "{path}: the page starts after `after`");
            }
            seen.extend(page.events);
            after = Some(page.next);
        }
        panic!("the feed never ran dry");
    }
}

// ---------------------------------------------------------------------------------------------
// Paging

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

// ---------------------------------------------------------------------------------------------
// Long-poll

async fn long_poll_answers_as_soon_as_an_event_arrives(t: TestStore) {
    let feed = Feed::new(t);
    story(feed.store.as_ref()).await;
    let before = settled(feed.store.as_ref(), 3).await;
    let after = id(before.last().unwrap());

    let started = Instant::now();
    let app = feed.app.clone();
    let path = format!("/v1/events?after={after}&wait=5");
    let request = tokio::spawn(async move { send(&app, &path, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !request.is_finished(),
        "nothing is new: the long-poll is still waiting"
    );
    let appended = append_stream(feed.store.as_ref(), &[cancelled()]).await;
    let reply = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("the long-poll answers")
        .unwrap();
    let elapsed = started.elapsed();
    let page = reply.page();
    assert_eq!(page.events.len(), 1, "{page:?}");
    assert_presents(&page.events[0], &appended[0]);
    assert_eq!(page.next, id(&appended[0]));
    assert!(
        elapsed < Duration::from_secs(4),
        "answered {elapsed:?} after the request, well before wait=5 ran out"
    );

    // Filtered: an event of another type does not end the wait; the wanted one does, and next
    // is past both.
    let after = page.next;
    let started = Instant::now();
    let app = feed.app.clone();
    let path = format!("/v1/events?after={after}&wait=5&types=Completed");
    let request = tokio::spawn(async move { send(&app, &path, &[]).await });
    let skipped = append_stream(feed.store.as_ref(), &[reminded()]).await;
    settled(feed.store.as_ref(), 5).await;
    assert!(
        !request.is_finished(),
        "only a skipped event is new: the long-poll is still waiting"
    );
    let wanted = append_stream(feed.store.as_ref(), &[completed()]).await;
    let page = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("the long-poll answers")
        .unwrap()
        .page();
    let elapsed = started.elapsed();
    assert_eq!(page.ids(), [id(&wanted[0])]);
    assert!(skipped[0].checkpoint() < wanted[0].checkpoint());
    assert_eq!(page.next, id(&wanted[0]));
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
}

async fn long_poll_with_nothing_new_answers_empty_after_the_wait(t: TestStore) {
    let feed = Feed::new(t);
    story(feed.store.as_ref()).await;
    let events = settled(feed.store.as_ref(), 3).await;
    let after = id(events.last().unwrap());

    let started = Instant::now();
    let page = feed.page(&format!("/v1/events?after={after}&wait=1")).await;
    let elapsed = started.elapsed();
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, after);
    assert!(
        elapsed >= Duration::from_millis(950),
        "waited {elapsed:?}, not the second asked"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "waited {elapsed:?}, far beyond the second asked"
    );

    // Skipped events do not end the wait either, but next moves past them.
    let started = Instant::now();
    let page = feed.page("/v1/events?types=Cancelled&wait=1").await;
    let elapsed = started.elapsed();
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, after);
    assert!(elapsed >= Duration::from_millis(950), "waited {elapsed:?}");

    // Without wait, nothing new is an immediate empty page.
    let page = feed.page(&format!("/v1/events?after={after}&wait=0")).await;
    assert!(page.events.is_empty());
    assert_eq!(page.next, after);
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events over a real socket

/// The router on a real listener on 127.0.0.1; the server stops when this is dropped.
struct Server {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One SSE message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// An SSE connection, read frame by frame.
struct SseClient {
    stream: ByteStream,
    buffer: Vec<u8>,
    /// Comment-only frames seen (keep-alives).
    comments: usize,
}

impl SseClient {
    async fn connect(base: &str, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new()
            .get(format!("{base}/v1/events?{query}"))
            .header("accept", EVENT_STREAM);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(PATIENCE, request.send())
            .await
            .expect("the stream opens")
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with(EVENT_STREAM), "{content_type}");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        Self {
            stream: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            comments: 0,
        }
    }

    /// The next message with data, skipping comments; fails at `deadline`.
    async fn next_frame(&mut self, deadline: Instant) -> Frame {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(raw).unwrap();
                if let Some(frame) = parse_frame(&text) {
                    return frame;
                }
                self.comments += 1;
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("an SSE message before the deadline")
                .expect("the stream stays open")
                .unwrap();
            self.buffer.extend_from_slice(&chunk);
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Frame> {
        let deadline = Instant::now() + PATIENCE;
        let mut frames = Vec::with_capacity(n);
        while frames.len() < n {
            frames.push(self.next_frame(deadline).await);
        }
        frames
    }
}

/// Parses one SSE message (its lines, without the blank line ending it); `None` for a message
/// that is only comments.
fn parse_frame(text: &str) -> Option<Frame> {
    let mut frame = Frame {
        id: None,
        event: None,
        data: String::new(),
    };
    let mut data = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => {}
            other => panic!("unexpected SSE field {other:?} in {text:?}"),
        }
    }
    if data.is_empty() && frame.id.is_none() && frame.event.is_none() {
        return None;
    }
    frame.data = data.join("\n");
    Some(frame)
}

/// Checks `frames` present `expected` exactly, in order.
fn assert_frames(frames: &[Frame], expected: &[&RecordedEvent]) {
    assert_eq!(
        frames
            .iter()
            .map(|f| f.id.clone().unwrap())
            .collect::<Vec<_>>(),
        expected.iter().map(|e| id(e)).collect::<Vec<_>>(),
        "ids in order"
    );
    for (frame, event) in frames.iter().zip(expected) {
        assert_eq!(frame.event.as_deref(), Some(event.event_type.as_str()));
        let json: Value = serde_json::from_str(&frame.data).unwrap();
        assert_presents(&json, event);
    }
}

async fn sse_streams_events_as_appended_and_resumes_after_last_event_id(t: TestStore) {
    let feed = Feed::new(t);
    let server = Server::start(feed.app.clone()).await;
    // Some history before the client connects, more while it reads.
    for _ in 0..2 {
        story(feed.store.as_ref()).await;
    }
    let mut client = SseClient::connect(&server.base, "", None).await;
    let store = feed.store.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..3 {
            story(store.as_ref()).await;
        }
    });
    let frames = client.take(15).await;
    writer.await.unwrap();
    let expected = settled(feed.store.as_ref(), 15).await;
    assert_frames(&frames, &expected.iter().collect::<Vec<_>>());

    // The client goes away; more events are appended meanwhile.
    drop(client);
    for _ in 0..2 {
        story(feed.store.as_ref()).await;
    }
    let last_seen = frames.last().unwrap().id.clone().unwrap();
    // Reconnecting with the last id seen continues exactly after it, whatever `after` says.
    let mut client = SseClient::connect(&server.base, "after=0-0", Some(&last_seen)).await;
    let store = feed.store.clone();
    let writer = tokio::spawn(async move { story(store.as_ref()).await });
    let frames = client.take(9).await;
    writer.await.unwrap();
    let expected = settled(feed.store.as_ref(), 24).await;
    assert_frames(&frames, &expected[15..].iter().collect::<Vec<_>>());

    // A sentinel appended last is the very next message: nothing was repeated or held back.
    let sentinel = append_stream(feed.store.as_ref(), &[cancelled()]).await;
    let next = client.take(1).await;
    assert_frames(&next, &[&sentinel[0]]);
}

async fn sse_filters_by_type_and_resumes_after_skipped_events(t: TestStore) {
    let feed = Feed::new(t);
    let server = Server::start(feed.app.clone()).await;
    for _ in 0..3 {
        story(feed.store.as_ref()).await;
    }
    let mut client = SseClient::connect(&server.base, "types=Due&limit=2", None).await;
    let store = feed.store.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..2 {
            story(store.as_ref()).await;
        }
    });
    let frames = client.take(5).await;
    writer.await.unwrap();
    let all = settled(feed.store.as_ref(), 15).await;
    let dues: Vec<&RecordedEvent> = all.iter().filter(|e| e.event_type == "Due").collect();
    assert_frames(&frames, &dues);
    drop(client);

    // Resume after the third Due (the query's `after` is overridden by Last-Event-ID).
    let third = frames[2].id.clone().unwrap();
    let mut client = SseClient::connect(
        &server.base,
        &format!("types=Due&after={}", id(&all[0])),
        Some(&third),
    )
    .await;
    let frames = client.take(2).await;
    assert_frames(&frames, &dues[3..]);
    let sentinel = append_stream(feed.store.as_ref(), &[reminded(), due()]).await;
    let next = client.take(1).await;
    assert_frames(&next, &[&sentinel[1]]);

    // `after` alone (no Last-Event-ID) is a starting point too.
    let mut client = SseClient::connect(
        &server.base,
        &format!("types=Due,Completed&after={}", id(dues[4])),
        None,
    )
    .await;
    let frames = client.take(2).await;
    let completed_last = all
        .iter()
        .rev()
        .find(|e| e.event_type == "Completed")
        .unwrap();
    assert_frames(&frames, &[completed_last, &sentinel[1]]);
}

// ---------------------------------------------------------------------------------------------
// Auth

fn token_for(scope: &str) -> String {
    format!("token-{}", scope.replace(':', "-"))
}

fn config_with_tokens() -> Config {
    let mut text = String::new();
    for scope in ["audit:read", "requests:read"] {
        text.push_str(&format!(
            "[[tokens]]\nname = \"{scope}\"\nsha256 = \"{}\"\nscopes = [\"{scope}\"]\n",
            token_hash(&token_for(scope))
        ));
    }
    Config::parse(&text).unwrap()
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

// ---------------------------------------------------------------------------------------------
// Gap safety (Postgres: SQLite has a single writer, so position order is commit order)

/// An event committed while an older transaction is still open is not served until that
/// transaction ends (it might still append an event before it); the feed is held back, never
/// moved past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_open_older_transaction_holds_the_feed_back() {
    let t = support::postgres().await;
    let TestStore::Postgres { store: pg, .. } = &t else {
        unreachable!()
    };
    let pg = pg.clone();
    let feed = Feed::new(t);
    let mut open = pg.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    let appended = append_stream(feed.store.as_ref(), &[due()]).await;

    let page = feed.page("/v1/events?wait=1").await;
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.next, Checkpoint::START.to_string(), "not moved past");

    open.commit().await.unwrap();
    let page = feed.page("/v1/events?wait=10").await;
    assert_eq!(page.ids(), [id(&appended[0])]);
}

// ---------------------------------------------------------------------------------------------

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::support::postgres().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::support::sqlite().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    paging_returns_every_event_once_in_order,
    types_filter_and_next_moves_past_skipped_events,
    bad_input_is_a_problem_naming_the_field,
    long_poll_answers_as_soon_as_an_event_arrives,
    long_poll_with_nothing_new_answers_empty_after_the_wait,
    sse_streams_events_as_appended_and_resumes_after_last_event_id,
    sse_filters_by_type_and_resumes_after_skipped_events,
    the_feed_needs_audit_read,
);
