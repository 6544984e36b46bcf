//! Read models persisted in the database and kept current by checkpointed subscriptions:
//! the pure folds live in the `lethe-projections` crate, their SQL here.
//!
//! - `requests` (table `request_view`): one row per request, behind `GET /v1/requests` and
//!   `GET /v1/stats`.

mod postgres;
mod sqlite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::{RequestId, RequestStatus};
use lethe_projections::requests::RequestRow;

use crate::store::{Checkpoint, RecordedEvent, StoreError};
use crate::workflow::subscription::Projector;

/// The subscription name of the `requests` read model.
pub const REQUESTS: &str = "requests";
/// Every read model, by name (for `lethe projections rebuild`).
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
                .received_from
                .is_none_or(|from| row.received_at >= from)
            && self.received_to.is_none_or(|to| row.received_at < to)
    }
}

/// The tables of the read models.
#[async_trait]
pub trait ReadModelStore: Send + Sync + fmt::Debug {
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

    /// Empties a read model and puts its subscription back to the start, owned by `owner`.
    async fn reset(&self, name: &str, owner: &str) -> Result<(), StoreError>;
}

/// The `requests` read model as a subscription.
#[derive(Debug, Clone)]
pub struct RequestsProjector {
    pub store: Arc<dyn ReadModelStore>,
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

/// Rebuilds a read model from an empty table: takes its subscription, resets it to the start
/// and replays the log in batches (never the whole log in memory), calling `progress` with the
/// events handled so far and the log's head position. Returns the events handled.
pub async fn rebuild(
    database: &crate::store::Database,
    name: &str,
    progress: &mut (dyn FnMut(u64, i64) + Send),
) -> Result<u64, StoreError> {
    let projector: Box<dyn Projector> = match name {
        REQUESTS => Box::new(RequestsProjector {
            store: database.read_models.clone(),
        }),
        other => {
            return Err(StoreError::Corrupt(format!(
                "no read model named {other:?} (known: {})",
                ALL.join(", ")
            )))
        }
    };
    let owner = format!("rebuild:{}", crate::workflow::runtime::owner_id());
    database.read_models.reset(name, &owner).await?;
    let runner = crate::workflow::subscription::SubscriptionRunner {
        events: database.events.clone(),
        workflow: database.workflow.clone(),
        owner: owner.clone(),
        lease: std::time::Duration::from_secs(300),
        poll_interval: std::time::Duration::from_millis(50),
    };
    let head = database.events.head_position().await?;
    let mut handled = 0_u64;
    loop {
        let n = runner.round_with(&*projector).await?;
        handled += n as u64;
        let checkpoint = database
            .workflow
            .subscription_checkpoint(name)
            .await?
            .unwrap_or_default();
        progress(handled, head);
        if n == 0 {
            // Not `checkpoint.position >= head`: on Postgres the read order is by transaction,
            // so the last event read need not hold the highest position.
            if database.events.caught_up(checkpoint, head).await? {
                break;
            }
            // On Postgres an open transaction elsewhere can hold the global read back briefly.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    database.workflow.release_subscription(name, &owner).await?;
    Ok(handled)
}

/// Brings the read models up to date from this process when no `lethe serve` holds them (the
/// CLI uses it before answering from a read model). Where another process owns a projection,
/// that process keeps it current and this returns at once.
pub async fn catch_up(database: &crate::store::Database) -> Result<(), StoreError> {
    let owner = crate::workflow::runtime::owner_id();
    let runner = crate::workflow::subscription::SubscriptionRunner {
        events: database.events.clone(),
        workflow: database.workflow.clone(),
        owner: owner.clone(),
        lease: std::time::Duration::from_secs(60),
        poll_interval: std::time::Duration::from_millis(50),
    };
    let projector = RequestsProjector {
        store: database.read_models.clone(),
    };
    while runner.round_with(&projector).await? > 0 {}
    database
        .workflow
        .release_subscription(REQUESTS, &owner)
        .await
}
