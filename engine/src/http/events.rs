//! The HTTP event feed (`GET /v1/events`), for services without Kafka: pages of the global log
//! in JSON (with long-poll), or Server-Sent Events when asked for `text/event-stream`. The
//! reading is the application service's ([`crate::app::feed`]); here the query is checked and
//! the answer rendered.
//!
//! Every event is identified by its checkpoint (`TRANSACTION-POSITION`), so a client that
//! continues from the last id it saw (`after`, or `Last-Event-ID` on reconnection) misses
//! nothing and sees nothing twice. Skipped events (`types`) still move the cursor, so `next`
//! (JSON) is the checkpoint of the last event *read*. (An SSE client resumes from the last
//! event it was sent, so on a reconnection the skipped events after it are read, and skipped,
//! again.)

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use lethe_domain::event::EVENT_TYPES;
use serde::Deserialize;

use super::problem::Problem;
use super::{auth, AppState};
pub use crate::app::feed::close_streams;
use crate::app::feed::{Checkpoint, FeedEvent, FeedPage, FeedParams, MAX_LIMIT};

/// Events per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The longest long-poll a client may ask for, in seconds.
const MAX_WAIT_SECONDS: u64 = 60;
/// A long-poll answers at the latest this long before the router's request timeout (408), so
/// an asked `wait` beyond `REQUEST_TIMEOUT - WAIT_MARGIN` is shortened to it.
const WAIT_MARGIN: Duration = Duration::from_secs(5);
/// How often an idle stream sends a comment, so that proxies keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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

/// The parameters, checked.
fn params(query: &FeedQuery, headers: &HeaderMap) -> Result<FeedParams, Problem> {
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
    Ok(FeedParams {
        start: last_event_id.or(after).unwrap_or(Checkpoint::START),
        types,
        limit,
        wait: Duration::from_secs(wait).min(longest),
    })
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

fn message(event: &FeedEvent) -> SseEvent {
    let data = serde_json::to_string(event)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode event: {e}\"}}"));
    SseEvent::default()
        .id(event.id.clone())
        .event(&event.event_type)
        .data(data)
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
    let params = params(&query, &headers)?;
    if wants_stream(&headers) {
        let stream = state
            .requests
            .feed_stream(params)
            .map(|event| Ok::<_, Infallible>(message(&event)));
        let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
        // Asks buffering proxies (nginx) to pass each message on at once.
        let headers = [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )];
        return Ok((headers, sse).into_response());
    }
    let page = state.requests.feed_page(&params).await?;
    Ok(Json(page).into_response())
}
