//! The HTTP event feed (`GET /v1/events`) on both backends (real Postgres, real SQLite):
//! paging with `after`/`next` returns every event exactly once and in the order of the gap-safe
//! global read; `types` filters while `next` still moves past the skipped events; bad input is
//! a 400 naming the parameter; a long-poll answers as soon as an event is appended (and empty
//! after `wait` when none is); Server-Sent Events over a real socket deliver events as they are
//! appended, and a client that reconnects with `Last-Event-ID` continues exactly after its last
//! event; the feed needs the `audit:read` scope. On Postgres, an open transaction holds the feed
//! back rather than letting it skip past an event that may still commit.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod gap_safety;
mod long_poll;
mod paging;
mod sse;

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
        reason: None,
    })
}

fn completed() -> Event {
    Event::Completed(Completed {
        at: at(),
        stores: Vec::new(),
    })
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
