//! The HTTP event feed (`GET /v1/events`), for services without Kafka: pages of the global log
//! in JSON (with long-poll), or Server-Sent Events when asked for `text/event-stream`.
//!
//! Every event is identified by its checkpoint (`TRANSACTION-POSITION`, see
//! [`Checkpoint`]), and every read goes through [`EventStore::read_all`], which never returns
//! an event whose transaction may still be followed by an earlier one committing. So a client
//! that continues from the last id it saw (`after`, or `Last-Event-ID` on reconnection) misses
//! nothing and sees nothing twice.
//!
//! Filtering by `types` happens here, after the read: skipped events still move the cursor, so
//! `next` (JSON) is the checkpoint of the last event *read*, and a client never re-reads a run
//! of events it did not want. (An SSE client resumes from the last event it was sent, so on a
//! reconnection the skipped events after it are read, and skipped, again.)

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::Stream;
use lethe_domain::event::EVENT_TYPES;
use lethe_domain::RequestId;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::problem::Problem;
use super::{auth, AppState};
use crate::store::{Checkpoint, EventStore, RecordedEvent, StoreError};

/// Events per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The most events per page, and the batch read from the log when filtering by type.
const MAX_LIMIT: u32 = 1000;
/// The longest long-poll a client may ask for, in seconds.
const MAX_WAIT_SECONDS: u64 = 60;
/// A long-poll answers at the latest this long before the router's request timeout (408), so
/// an asked `wait` beyond `REQUEST_TIMEOUT - WAIT_MARGIN` is shortened to it.
const WAIT_MARGIN: Duration = Duration::from_secs(5);
/// How often a waiting long-poll or an idle stream looks at the log again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest pause after a failed read in a stream (the pause doubles from `POLL_INTERVAL`).
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// The most events one JSON request reads while looking for events of the asked types; past
/// it the page is answered (possibly empty) with `next` moved past what was read.
const SCAN_BUDGET: usize = 10_000;
/// How often an idle stream sends a comment, so that proxies keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Turns true when the server shuts down: streams end and long-polls answer at once, so that
/// graceful shutdown does not wait on them.
static CLOSING: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::Sender::new(false));

/// Ends every open event stream and wakes every waiting long-poll of this process. Call it when
/// shutdown begins: graceful shutdown waits for responses in flight, and a stream never ends on
/// its own. Clients reconnect (elsewhere) with `Last-Event-ID` and miss nothing.
pub fn close_streams() {
    CLOSING.send_replace(true);
}

/// The feed's query parameters. All are read as text and checked here, so that an error names
/// its parameter.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Start after this event: the `next` of the previous page, or an event's `id`
    /// (`TRANSACTION-POSITION`). Absent: from the beginning of the log.
    #[param(example = "0-42", schema_with = super::schema::checkpoint)]
    after: Option<String>,
    /// Only events of these types, comma-separated (e.g. `Due,Completed`). Absent: every type.
    #[param(example = "Due,Completed", schema_with = super::schema::event_types)]
    types: Option<String>,
    /// The most events in a page, 1-1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Long-poll: when no event is available, wait up to this many seconds (0-60; default 0)
    /// for one before answering. The server may answer an empty page sooner (at the latest
    /// 25 s after the request); poll again with the same `after`. Ignored for SSE.
    #[param(value_type = Option<u32>, minimum = 0, maximum = 60)]
    wait: Option<String>,
}

/// One event of the log, as the feed presents it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedEvent {
    /// The event's checkpoint in the global read order: pass it as `after` (or `Last-Event-ID`)
    /// to continue after this event.
    #[schema(example = "0-42")]
    pub id: String,
    pub event_id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub request_id: RequestId,
    #[serde(rename = "type")]
    #[schema(example = "Due")]
    pub event_type: String,
    /// The event's position in the log (increasing, not gap-free).
    pub position: i64,
    /// The event's version within its request (1 for `Received`).
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
    /// Who caused it: `token:<name>`, `cli:<user>`, `system:<component>`, `subject`.
    pub actor: String,
    pub correlation_id: Uuid,
    /// The event's payload, as in the request's history.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl FeedEvent {
    pub fn new(event: &RecordedEvent) -> Self {
        Self {
            id: event.checkpoint().to_string(),
            event_id: event.event_id,
            request_id: event.stream_id,
            event_type: event.event_type.clone(),
            position: event.position,
            version: event.version,
            recorded_at: event.recorded_at,
            actor: event.actor.clone(),
            correlation_id: event.correlation_id,
            data: event.payload.clone(),
        }
    }
}

/// A page of the feed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// Pass as `after` for the next page: the checkpoint of the last event read, which is past
    /// the last event returned when events of other types followed it. Equal to `after` when
    /// nothing new was found.
    #[schema(example = "0-42")]
    pub next: String,
}

/// The parameters, checked.
#[derive(Debug)]
struct Params {
    start: Checkpoint,
    types: Option<BTreeSet<&'static str>>,
    limit: u32,
    wait: Duration,
}

impl Params {
    fn parse(query: &FeedQuery, headers: &HeaderMap) -> Result<Self, Problem> {
        let after = query
            .after
            .as_deref()
            .map(|text| checkpoint("after", text))
            .transpose()?;
        let last_event_id = last_event_id(headers)?;
        let types = query.types.as_deref().map(types).transpose()?;
        let limit = match query.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Problem::invalid("limit", format!("must be an integer 1-{MAX_LIMIT}"))
                })?,
        };
        let wait = match query.wait.as_deref() {
            None => 0,
            Some(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_WAIT_SECONDS)
                .ok_or_else(|| {
                    Problem::invalid(
                        "wait",
                        format!("must be a whole number of seconds 0-{MAX_WAIT_SECONDS}"),
                    )
                })?,
        };
        let longest = super::REQUEST_TIMEOUT.saturating_sub(WAIT_MARGIN);
        Ok(Self {
            start: last_event_id.or(after).unwrap_or(Checkpoint::START),
            types,
            limit,
            wait: Duration::from_secs(wait).min(longest),
        })
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.contains(event.event_type.as_str()))
    }

    /// How many events to read at once: a page's worth, or a large batch when most of what is
    /// read may be skipped.
    fn batch(&self, room: usize) -> u32 {
        if self.types.is_some() {
            MAX_LIMIT
        } else {
            u32::try_from(room).unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT)
        }
    }
}

fn checkpoint(field: &str, text: &str) -> Result<Checkpoint, Problem> {
    text.trim()
        .parse::<Checkpoint>()
        .ok()
        .filter(|c| c.transaction_id >= 0 && c.position >= 0)
        .ok_or_else(|| {
            Problem::invalid(
                field,
                "is not an event id from this feed (TRANSACTION-POSITION, e.g. 0-42)",
            )
        })
}

/// `Last-Event-ID`, which an SSE client sends when it reconnects; empty means none.
fn last_event_id(headers: &HeaderMap) -> Result<Option<Checkpoint>, Problem> {
    const FIELD: &str = "Last-Event-ID";
    let Some(value) = headers.get(FIELD) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Problem::invalid(FIELD, "is not an event id from this feed"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    checkpoint(FIELD, text).map(Some)
}

fn types(text: &str) -> Result<BTreeSet<&'static str>, Problem> {
    let mut set = BTreeSet::new();
    for name in text.split(',').map(str::trim) {
        let known = EVENT_TYPES.iter().find(|t| **t == name).ok_or_else(|| {
            let shown: String = name.chars().take(64).collect();
            Problem::invalid(
                "types",
                format!(
                    "{shown:?} is not an event type (one of {})",
                    EVENT_TYPES.join(", ")
                ),
            )
        })?;
        set.insert(*known);
    }
    Ok(set)
}

/// Whether the client asked for Server-Sent Events.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|range| range.split(';').next())
        .any(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Pauses until `until`, or until shutdown begins.
async fn pause(until: Instant, closing: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        _ = closing.changed() => {}
    }
}

/// Reads from `cursor` into `page` until the page holds `limit` events, the log is exhausted
/// (returns true), or `SCAN_BUDGET` events were read. `cursor` ends at the last event read
/// into the page or skipped; events read beyond a full page are left for the next request.
async fn fill(
    store: &dyn EventStore,
    params: &Params,
    cursor: &mut Checkpoint,
    page: &mut Vec<FeedEvent>,
) -> Result<bool, StoreError> {
    let limit = params.limit as usize;
    let mut scanned = 0;
    loop {
        let batch = params.batch(limit - page.len());
        let events = store.read_all(*cursor, batch).await?;
        let exhausted = events.len() < batch as usize;
        for event in &events {
            *cursor = event.checkpoint();
            scanned += 1;
            if params.wants(event) {
                page.push(FeedEvent::new(event));
                if page.len() >= limit {
                    return Ok(false);
                }
            }
        }
        if exhausted {
            return Ok(true);
        }
        if scanned >= SCAN_BUDGET {
            return Ok(false);
        }
    }
}

/// A page from `params.start`, waiting up to `params.wait` for the first matching event.
async fn page(store: &dyn EventStore, params: &Params) -> Result<FeedPage, StoreError> {
    let deadline = Instant::now() + params.wait;
    let mut closing = CLOSING.subscribe();
    let mut cursor = params.start;
    let mut events = Vec::new();
    loop {
        let exhausted = fill(store, params, &mut cursor, &mut events).await?;
        // Answer once there is something, or progress through skipped events to report.
        if !events.is_empty() || !exhausted {
            break;
        }
        let now = Instant::now();
        if now >= deadline || *closing.borrow() {
            break;
        }
        pause((now + POLL_INTERVAL).min(deadline), &mut closing).await;
    }
    Ok(FeedPage {
        events,
        next: cursor.to_string(),
    })
}

/// A stream's state between two messages.
struct Tail {
    store: Arc<dyn EventStore>,
    params: Params,
    /// The last event read (sent or skipped).
    cursor: Checkpoint,
    /// Events read and wanted, not yet sent.
    pending: VecDeque<RecordedEvent>,
    closing: watch::Receiver<bool>,
    failures: u32,
}

fn message(event: &RecordedEvent) -> SseEvent {
    let data = serde_json::to_string(&FeedEvent::new(event))
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode event: {e}\"}}"));
    SseEvent::default()
        .id(event.checkpoint().to_string())
        .event(&event.event_type)
        .data(data)
}

/// The stream of wanted events after `params.start`, tailing the log. It ends only when the
/// client goes away (the body is dropped) or the server shuts down.
fn tail(
    store: Arc<dyn EventStore>,
    params: Params,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let state = Tail {
        store,
        cursor: params.start,
        params,
        pending: VecDeque::new(),
        closing: CLOSING.subscribe(),
        failures: 0,
    };
    futures::stream::unfold(state, |mut tail| async move {
        loop {
            if let Some(event) = tail.pending.pop_front() {
                return Some((Ok(message(&event)), tail));
            }
            if *tail.closing.borrow() {
                return None;
            }
            let batch = tail.params.batch(tail.params.limit as usize);
            match tail.store.read_all(tail.cursor, batch).await {
                Ok(events) => {
                    tail.failures = 0;
                    let exhausted = events.len() < batch as usize;
                    for event in events {
                        tail.cursor = event.checkpoint();
                        if tail.params.wants(&event) {
                            tail.pending.push_back(event);
                        }
                    }
                    if tail.pending.is_empty() && exhausted {
                        let until = Instant::now() + POLL_INTERVAL;
                        pause(until, &mut tail.closing).await;
                    }
                }
                Err(error) => {
                    tail.failures = tail.failures.saturating_add(1);
                    let backoff = POLL_INTERVAL
                        .saturating_mul(2_u32.saturating_pow(tail.failures.min(8)))
                        .min(MAX_RETRY_INTERVAL);
                    tracing::warn!(
                        error = %error,
                        after = %tail.cursor,
                        retry_in_ms = backoff.as_millis(),
                        "event stream cannot read the log; retrying"
                    );
                    pause(Instant::now() + backoff, &mut tail.closing).await;
                }
            }
        }
    })
}

/// The global event log, in the order a gap-safe reader sees it.
///
/// JSON: a page of events after `after` and the `next` checkpoint to continue from; with
/// `wait`, an empty answer is held until an event arrives. With `Accept: text/event-stream`:
/// Server-Sent Events, one message per event (`id:` its checkpoint, `event:` its type,
/// `data:` the event as in the JSON page), tailing the log until the client disconnects, with
/// keep-alive comments every 15 s; a reconnecting client sends `Last-Event-ID` and continues
/// exactly after it. Either way nothing is skipped and nothing is repeated: an event whose
/// transaction may still be followed by an earlier one committing is held back until it cannot.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "audit",
    params(
        FeedQuery,
        super::schema::LastEventId,
    ),
    responses(
        (status = 200, description = "A page of events (JSON), or the event stream when `Accept: text/event-stream`",
            content(
                (FeedPage = "application/json"),
                (String = "text/event-stream", example = json!("id: 0-42\nevent: Due\ndata: {\"id\":\"0-42\",\"event_id\":\"...\",\"request_id\":\"...\",\"type\":\"Due\",...}\n\n")),
            )
        ),
        (status = 400, description = "Invalid input, the field named (`after`, `types`, `limit`, `wait`, `Last-Event-ID`)", body = Problem, content_type = "application/problem+json"),
        super::responses::Guarded,
        super::responses::Stored,
    ),
    security(("bearer" = ["audit:read"]))
)]
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    auth::require(state.requests.config(), &headers, "audit:read")?;
    let Query(query) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let params = Params::parse(&query, &headers)?;
    let store = state.requests.store().clone();
    if wants_stream(&headers) {
        let stream = tail(store, params);
        let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
        // Asks buffering proxies (nginx) to pass each message on at once.
        let headers = [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )];
        return Ok((headers, sse).into_response());
    }
    let page = page(store.as_ref(), &params).await?;
    Ok(Json(page).into_response())
}
