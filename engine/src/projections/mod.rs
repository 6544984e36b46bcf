//! Projections persisted in the database and kept current by checkpointed subscriptions:
//! the pure folds live in the `lethe-projections` crate, their SQL here.
//!
//! - `requests` (table `requests_projection`): one row per request, behind `GET /v1/requests` and
//!   `GET /v1/stats`; the same subscription keeps the `suppressions` table (ADR 33).

mod postgres;
mod sqlite;
pub mod suppressions;
mod tallies;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::{RequestId, RequestStatus};
use lethe_projections::requests::RequestRow;
use lethe_projections::tallies::Tallies;
pub use lethe_projections::tallies::{Tally, TallyKey};

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

/// How a backend binds the list's values: ids, dates and times as its columns hold them.
pub(crate) struct Encoders<I, D, T> {
    pub id: fn(RequestId) -> I,
    pub date: fn(NaiveDate) -> D,
    pub time: fn(DateTime<Utc>) -> T,
}

/// The list's query after `prefix` (an `EXPLAIN` to see its plan), `p` the projection's rows.
/// With a cleaner, its table's primary key drives the list (in order of receipt) through
/// `join` (SQLite's `CROSS JOIN` keeps that order of loops); else the projection's own, read
/// through `by_deadline` (SQLite's `INDEXED BY` the open deadlines' index) for the at-risk and
/// overdue lists: the open requests in that range, sorted, rather than every row in order of
/// receipt until enough pass.
pub(crate) fn list_query<'a, DB, I, D, T>(
    prefix: &str,
    filter: &RequestFilter,
    after: Option<RequestId>,
    limit: u32,
    (join, by_deadline): (&str, &str),
    encode: &Encoders<I, D, T>,
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'static str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    I: sqlx::Encode<'a, DB> + sqlx::Type<DB> + 'a,
    D: sqlx::Encode<'a, DB> + sqlx::Type<DB> + 'a,
    T: sqlx::Encode<'a, DB> + sqlx::Type<DB> + 'a,
{
    let today = filter.today.unwrap_or_else(|| Utc::now().date_naive());
    let mut query = sqlx::QueryBuilder::new(format!("{prefix}SELECT p.row_data FROM "));
    let key = if let Some(cleaner) = &filter.cleaner {
        query
            .push(format!(
                "unfinished_cleaners w {join} requests_projection p \
                 ON p.request_id = w.request_id WHERE w.cleaner = "
            ))
            .push_bind(cleaner.clone());
        "w.request_id"
    } else if filter.at_risk || filter.overdue {
        query.push(format!("requests_projection p {by_deadline} WHERE 1 = 1"));
        "p.request_id"
    } else {
        query.push("requests_projection p WHERE 1 = 1");
        "p.request_id"
    };
    if let Some(after) = after {
        query
            .push(format!(" AND {key} > "))
            .push_bind((encode.id)(after));
    }
    if let Some(status) = filter.status {
        query.push(" AND p.status = ").push_bind(status.as_str());
    }
    if filter.needs_attention {
        query.push(" AND p.status = 'needs_attention'");
    }
    if let Some(jurisdiction) = &filter.jurisdiction {
        query
            .push(" AND p.jurisdiction = ")
            .push_bind(jurisdiction.clone());
    }
    if filter.at_risk {
        let last = today + chrono::TimeDelta::days(filter.at_risk_days);
        query
            .push(" AND p.closed_at IS NULL AND p.deadline >= ")
            .push_bind((encode.date)(today))
            .push(" AND p.deadline <= ")
            .push_bind((encode.date)(last));
    }
    if filter.overdue {
        query
            .push(" AND p.closed_at IS NULL AND p.deadline < ")
            .push_bind((encode.date)(today));
    }
    if let Some(from) = filter.received_from {
        query
            .push(" AND p.received_at >= ")
            .push_bind((encode.time)(from));
    }
    if let Some(to) = filter.received_to {
        query
            .push(" AND p.received_at < ")
            .push_bind((encode.time)(to));
    }
    query
        .push(format!(" ORDER BY {key} LIMIT "))
        .push_bind(i64::from(limit));
    query
}

/// `SELECT {columns}` of the open requests whose deadline is on or after `from` and before
/// `until`, on the index of open deadlines.
pub(crate) fn open_query<'a, DB, I, D, T>(
    columns: &str,
    from: Option<NaiveDate>,
    until: Option<NaiveDate>,
    encode: &Encoders<I, D, T>,
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    D: sqlx::Encode<'a, DB> + sqlx::Type<DB> + 'a,
{
    let mut query = sqlx::QueryBuilder::new(format!(
        "SELECT {columns} FROM requests_projection WHERE closed_at IS NULL"
    ));
    if let Some(from) = from {
        query
            .push(" AND deadline >= ")
            .push_bind((encode.date)(from));
    }
    if let Some(until) = until {
        query
            .push(" AND deadline < ")
            .push_bind((encode.date)(until));
    }
    query
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

    /// The counters of these figures (ADR 37), those with a count or a sum other than zero.
    async fn tallies(&self, figures: &[String]) -> Result<Vec<(TallyKey, Tally)>, StoreError>;

    /// Open requests whose deadline is on or after `from` and before `until` (either bound
    /// may be absent), counted on the index of open requests' deadlines.
    async fn count_open(
        &self,
        from: Option<NaiveDate>,
        until: Option<NaiveDate>,
    ) -> Result<u64, StoreError>;

    /// Up to `limit` of those open requests, most urgent first (deadline, receipt, id), read
    /// in that index's order.
    async fn most_urgent(
        &self,
        from: Option<NaiveDate>,
        until: Option<NaiveDate>,
        limit: u32,
    ) -> Result<Vec<RequestRow>, StoreError>;

    /// The database's plan of a list with `filter`, one line per step (Postgres: the plan with
    /// sequential scans ruled out, the one a large table gets), for diagnostics and tests.
    async fn explain_list(&self, filter: &RequestFilter) -> Result<Vec<String>, StoreError>;

    /// Fills the counters from the rows already projected when a migration left the mark
    /// asking for it (`projection_backfills`), in one transaction that holds the projection's
    /// subscription off meanwhile; answers whether it did.
    async fn backfill_tallies(&self) -> Result<bool, StoreError>;

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

/// [`fold_batch`], with how the batch moves the counters: what the rows contribute after it
/// minus what they did before it.
pub(crate) fn fold_counted(
    rows: std::collections::HashMap<RequestId, RequestRow>,
    events: &[RecordedEvent],
) -> Result<(std::collections::HashMap<RequestId, RequestRow>, Tallies), StoreError> {
    let mut tallies = Tallies::default();
    for row in rows.values() {
        tallies.remove(row);
    }
    let folded = fold_batch(rows, events)?;
    for row in folded.values() {
        tallies.add(row);
    }
    Ok((folded, tallies))
}

/// The rows a backfill reads at once.
pub(crate) const BACKFILL_PAGE: i64 = 5_000;
/// The mark a migration leaves for [`ProjectionStore::backfill_tallies`].
pub(crate) const TALLIES_BACKFILL: &str = "request_tallies";

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
/// CLI uses it before answering from a projection): every event appended before the call is
/// projected when it returns. Where another process owns a projection, that process keeps it
/// current and this returns at once.
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
    // Everything appended before this call, also what a transaction still open elsewhere
    // keeps from the global read for a moment.
    let head = events.head_position().await?;
    runner.catch_up_to(&projector, head).await?;
    store.release_subscription(REQUESTS, &owner).await
}
