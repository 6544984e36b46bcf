//! Projections persisted in the database and kept current by checkpointed subscriptions:
//! the pure folds live in the `lethe-projections` crate, their SQL here.
//!
//! - `requests` (table `requests_projection`): one row per request, behind `GET /v1/requests` and
//!   `GET /v1/stats`; the same subscription keeps the `suppressions` table (ADR 33).

mod postgres;
mod sqlite;
pub mod suppressions;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::{RequestId, RequestStatus};
use lethe_projections::requests::RequestRow;

use crate::store::{Checkpoint, EventStore, RecordedEvent, StoreError};
use crate::subscriptions::{owner_id, Projector, SubscriptionRunner, SubscriptionStore};

/// The subscription name of the `requests` projection.
pub const REQUESTS: &str = "requests";
/// Every projection, by name (for `lethe projections rebuild`).
pub const ALL: [&str; 1] = [REQUESTS];

/// Which requests a list wants.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub status: Option<RequestStatus>,
    pub jurisdiction: Option<String>,
    /// Open requests whose deadline is within `at_risk_days` of `today` (not yet passed).
    pub at_risk: bool,
    /// Open requests whose deadline has passed.
    pub overdue: bool,
    pub needs_attention: bool,
    /// Requests with this cleaner planned and not yet succeeded or skipped.
    pub cleaner: Option<String>,
    pub received_from: Option<DateTime<Utc>>,
    pub received_to: Option<DateTime<Utc>>,
    pub today: Option<NaiveDate>,
    pub at_risk_days: i64,
}

impl RequestFilter {
    /// Whether a row passes the filter (the SQL pre-selects; this is the exact rule).
    pub fn accepts(&self, row: &RequestRow) -> bool {
        let today = self.today.unwrap_or_else(|| Utc::now().date_naive());
        let days_left = (row.deadline - today).num_days();
        self.status.is_none_or(|s| s == row.status)
            && self
                .jurisdiction
                .as_ref()
                .is_none_or(|j| *j == row.jurisdiction)
            && (!self.at_risk || (row.is_open() && (0..=self.at_risk_days).contains(&days_left)))
            && (!self.overdue || (row.is_open() && days_left < 0))
            && (!self.needs_attention || row.status == RequestStatus::NeedsAttention)
            && self
                .cleaner
                .as_ref()
                .is_none_or(|name| row.unfinished_cleaners().any(|c| c == name))
            && self
                .received_from
                .is_none_or(|from| row.received_at >= from)
            && self.received_to.is_none_or(|to| row.received_at < to)
    }
}

/// Pushes the `FROM` and the first `WHERE` condition of a list, `p` the projection's rows, and
/// answers the column the list is ordered by. With a cleaner, its table's primary key drives the
/// list (in order of receipt) through `join` (SQLite's `CROSS JOIN` keeps that order of loops);
/// else the projection's own.
pub(crate) fn list_source<'a, DB: sqlx::Database>(
    query: &mut sqlx::QueryBuilder<'a, DB>,
    filter: &RequestFilter,
    join: &str,
) -> &'static str
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if let Some(cleaner) = &filter.cleaner {
        query
            .push(format!(
                "unfinished_cleaners w {join} requests_projection p \
                 ON p.request_id = w.request_id WHERE w.cleaner = "
            ))
            .push_bind(cleaner.clone());
        "w.request_id"
    } else {
        query.push("requests_projection p WHERE 1 = 1");
        "p.request_id"
    }
}

/// The tables of the projections. Their subscriptions live in the same database, so a batch's
/// rows are written in the transaction that moves the checkpoint.
#[async_trait]
pub trait ProjectionStore: SubscriptionStore {
    /// Folds `events` into the `requests` rows and moves the checkpoint, in one transaction,
    /// if `owner` holds the subscription.
    async fn commit_requests(
        &self,
        owner: &str,
        checkpoint: Checkpoint,
        events: &[RecordedEvent],
    ) -> Result<bool, StoreError>;

    /// Up to `limit` rows with an id above `after`, in id order (ids are UUIDv7, so this is
    /// the order of receipt, and rows inserted meanwhile never shift a page already read).
    async fn list_requests(
        &self,
        filter: &RequestFilter,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<RequestRow>, StoreError>;

    /// The suppression entries in force at `at` (not expired) among these hashes.
    async fn find_suppressions(
        &self,
        hashes: &[String],
        at: DateTime<Utc>,
    ) -> Result<Vec<suppressions::SuppressionEntry>, StoreError>;

    /// Empties a projection and puts its subscription back to the start, owned by `owner`.
    async fn reset(&self, name: &str, owner: &str) -> Result<(), StoreError>;
}

/// The `requests` projection as a subscription.
#[derive(Debug, Clone)]
pub struct RequestsProjector {
    pub store: Arc<dyn ProjectionStore>,
}

#[async_trait]
impl Projector for RequestsProjector {
    fn name(&self) -> &'static str {
        REQUESTS
    }

    async fn commit(
        &self,
        owner: &str,
        checkpoint: Checkpoint,
        events: &[RecordedEvent],
    ) -> Result<bool, StoreError> {
        self.store.commit_requests(owner, checkpoint, events).await
    }
}

/// Folds a batch into the rows it touches; `existing` holds their rows before the batch.
pub(crate) fn fold_batch(
    mut rows: std::collections::HashMap<RequestId, RequestRow>,
    events: &[RecordedEvent],
) -> Result<std::collections::HashMap<RequestId, RequestRow>, StoreError> {
    for recorded in events {
        let event = recorded.event()?;
        let before = rows.remove(&recorded.stream_id);
        if let Some(after) = lethe_projections::requests::apply(before, &event) {
            rows.insert(recorded.stream_id, after);
        }
    }
    Ok(rows)
}

pub(crate) fn encode(row: &RequestRow) -> Result<String, StoreError> {
    serde_json::to_string(row).map_err(|e| StoreError::Corrupt(format!("request row: {e}")))
}

pub(crate) fn decode(text: &str) -> Result<RequestRow, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("request row: {e}")))
}

/// Events a rebuild reads per round: far more than a live subscription's batch, since a
/// rebuild only ever catches up.
const REBUILD_BATCH: u32 = 5_000;
/// How long a rebuild's hold on its subscription lasts; it is renewed every round.
const REBUILD_LEASE: std::time::Duration = std::time::Duration::from_secs(300);

/// Rebuilds a projection from an empty table: takes its subscription, resets it to the start
/// and replays the log in batches (never the whole log in memory), calling `progress` with the
/// events handled so far and the log's head position. Returns the events handled.
///
/// The next batch is read while the current one is folded and written (at most two batches in
/// memory); each batch moves the checkpoint in the transaction that writes its rows, so an
/// interrupted rebuild resumes where it stopped.
pub async fn rebuild(
    events: &Arc<dyn EventStore>,
    store: &Arc<dyn ProjectionStore>,
    name: &str,
    progress: &mut (dyn FnMut(u64, i64) + Send),
) -> Result<u64, StoreError> {
    let projector: Box<dyn Projector> = match name {
        REQUESTS => Box::new(RequestsProjector {
            store: store.clone(),
        }),
        other => {
            return Err(StoreError::Corrupt(format!(
                "no projection named {other:?} (known: {})",
                ALL.join(", ")
            )))
        }
    };
    let owner = format!("rebuild:{}", owner_id());
    store.reset(name, &owner).await?;
    let head = events.head_position().await?;
    let (batches, mut arriving) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn(read_ahead(events.clone(), head, batches));
    let mut handled = 0_u64;
    let outcome = async {
        while let Some(batch) = arriving.recv().await {
            let batch = batch?;
            let Some(last) = batch.last() else { continue };
            // Renews the hold (and fails if another owner took the projection over).
            let held = store
                .acquire_subscription(name, &owner, REBUILD_LEASE, Utc::now())
                .await?
                .is_some();
            if !held || !projector.commit(&owner, last.checkpoint(), &batch).await? {
                return Err(StoreError::Corrupt(format!(
                    "another process took over the {name} projection during its rebuild"
                )));
            }
            handled += batch.len() as u64;
            progress(handled, head);
        }
        Ok(())
    }
    .await;
    reader.abort();
    outcome?;
    store.release_subscription(name, &owner).await?;
    Ok(handled)
}

/// Reads the log from the start in rebuild-sized batches into `batches` until every event up
/// to `head` has been read.
async fn read_ahead(
    events: Arc<dyn EventStore>,
    head: i64,
    batches: tokio::sync::mpsc::Sender<Result<Vec<RecordedEvent>, StoreError>>,
) {
    let mut checkpoint = Checkpoint::START;
    loop {
        let batch = match events.read_all(checkpoint, REBUILD_BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                let _ = batches.send(Err(error)).await;
                return;
            }
        };
        if let Some(last) = batch.last() {
            checkpoint = last.checkpoint();
            if batches.send(Ok(batch)).await.is_err() {
                return;
            }
            continue;
        }
        // Not `checkpoint.position >= head`: on Postgres the read order is by transaction, so
        // the last event read need not hold the highest position.
        match events.caught_up(checkpoint, head).await {
            Ok(true) => return,
            Ok(false) => {
                // An open transaction elsewhere can hold the global read back briefly.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => {
                let _ = batches.send(Err(error)).await;
                return;
            }
        }
    }
}

/// Brings the projections up to date from this process when no `lethe serve` holds them (the
/// CLI uses it before answering from a projection). Where another process owns a projection,
/// that process keeps it current and this returns at once.
pub async fn catch_up(
    events: &Arc<dyn EventStore>,
    store: &Arc<dyn ProjectionStore>,
) -> Result<(), StoreError> {
    let owner = owner_id();
    let runner = SubscriptionRunner {
        events: events.clone(),
        subscriptions: store.clone(),
        owner: owner.clone(),
        lease: std::time::Duration::from_secs(60),
        poll_interval: std::time::Duration::from_millis(50),
    };
    let projector = RequestsProjector {
        store: store.clone(),
    };
    while runner.round(&projector).await? > 0 {}
    store.release_subscription(REQUESTS, &owner).await
}
