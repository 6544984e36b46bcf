//! The event feed, for services without Kafka: pages of the global log (with long-poll), or
//! a stream that tails it.
//!
//! Every event is identified by its checkpoint (`TRANSACTION-POSITION`, see [`Checkpoint`]),
//! and every read goes through `EventStore::read_all`, which never returns an event whose
//! transaction may still be followed by an earlier one committing. So a client that continues
//! from the last id it saw misses nothing and sees nothing twice.
//!
//! Filtering by type happens here, after the read: skipped events still move the cursor, so
//! `next` is the checkpoint of the last event *read*, and a client never re-reads a run of
//! events it did not want.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use lethe_domain::RequestId;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::{RequestError, Requests};
/// A place in the global read order (`TRANSACTION-POSITION`): where a page or stream starts.
pub use crate::store::Checkpoint;
use crate::store::{EventStore, RecordedEvent, StoreError};

/// The most events per page, and the batch read from the log when filtering by type.
pub const MAX_LIMIT: u32 = 1000;
/// How often a waiting long-poll or an idle stream looks at the log again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest pause after a failed read in a stream (the pause doubles from `POLL_INTERVAL`).
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// The most events one page request reads while looking for events of the asked types; past
/// it the page is answered (possibly empty) with `next` moved past what was read.
const SCAN_BUDGET: usize = 10_000;

/// Turns true when the server shuts down: streams end and long-polls answer at once, so that
/// graceful shutdown does not wait on them.
static CLOSING: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::Sender::new(false));

/// Ends every open event stream and wakes every waiting long-poll of this process. Call it when
/// shutdown begins: graceful shutdown waits for responses in flight, and a stream never ends on
/// its own. Clients reconnect (elsewhere) with their last event id and miss nothing.
pub fn close_streams() {
    CLOSING.send_replace(true);
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

/// What a page or a stream of the feed wants.
#[derive(Debug, Clone)]
pub struct FeedParams {
    /// Start after this event.
    pub start: Checkpoint,
    /// Only events of these types; `None`: every type.
    pub types: Option<BTreeSet<&'static str>>,
    /// The most events in a page, 1-[`MAX_LIMIT`].
    pub limit: u32,
    /// For a page: when no event is available, wait up to this long for one.
    pub wait: Duration,
}

impl FeedParams {
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
    params: &FeedParams,
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
async fn page(store: &dyn EventStore, params: &FeedParams) -> Result<FeedPage, StoreError> {
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

/// A stream's state between two events.
struct Tail {
    store: Arc<dyn EventStore>,
    params: FeedParams,
    /// The last event read (sent or skipped).
    cursor: Checkpoint,
    /// Events read and wanted, not yet sent.
    pending: VecDeque<RecordedEvent>,
    closing: watch::Receiver<bool>,
    failures: u32,
}

/// The stream of wanted events after `params.start`, tailing the log. It ends only when the
/// consumer drops it or the server shuts down; a failed read is logged and retried.
fn tail(
    store: Arc<dyn EventStore>,
    params: FeedParams,
) -> impl Stream<Item = FeedEvent> + Send + 'static {
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
                return Some((FeedEvent::new(&event), tail));
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

impl Requests {
    /// A page of the feed from `params.start`, waiting up to `params.wait` for the first
    /// wanted event.
    pub async fn feed_page(&self, params: &FeedParams) -> Result<FeedPage, RequestError> {
        Ok(page(self.store().as_ref(), params).await?)
    }

    /// The wanted events after `params.start`, tailing the log until the stream is dropped or
    /// [`close_streams`] is called.
    pub fn feed_stream(
        &self,
        params: FeedParams,
    ) -> impl Stream<Item = FeedEvent> + Send + 'static {
        tail(self.store().clone(), params)
    }
}
