//! Queries over the projections and the health of the store: the request list, the stats,
//! and readiness.

use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::{RequestId, RequestStatus};

use super::stats::{compute_stats, StatsView};
use super::{RequestError, Requests};
use crate::projections::{ProjectionStore, RequestFilter};

/// A row of the `requests` projection: what a list shows of a request.
pub use lethe_projections::requests::RequestRow;

/// Which requests a list wants; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<RequestStatus>,
    pub jurisdiction: Option<String>,
    /// Open requests whose deadline is at most `[policy] at_risk_days` away.
    pub at_risk: bool,
    /// Open requests past their deadline.
    pub overdue: bool,
    pub needs_attention: bool,
    /// Requests with this cleaner planned and not yet succeeded or skipped (pending, failing
    /// or out of attempts).
    pub cleaner: Option<lethe_domain::CleanerName>,
    /// Received at or after.
    pub received_from: Option<DateTime<Utc>>,
    /// Received before.
    pub received_to: Option<DateTime<Utc>>,
}

/// A page of the request list, in order of receipt.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub rows: Vec<RequestRow>,
    /// Where the next page starts (pass as `after`); `None` on the last page.
    pub next_cursor: Option<RequestId>,
}

impl Requests {
    /// The projections, or [`RequestError::NoProjections`] in a process that serves none.
    pub(super) fn projections_or_refuse(&self) -> Result<&dyn ProjectionStore, RequestError> {
        self.projections()
            .map(|r| &**r)
            .ok_or(RequestError::NoProjections)
    }

    /// Up to `limit` requests after `after` that pass `filter`.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<ListPage, RequestError> {
        let store = self.projections_or_refuse()?;
        let filter = RequestFilter {
            status: filter.status,
            jurisdiction: filter.jurisdiction.clone(),
            at_risk: filter.at_risk,
            overdue: filter.overdue,
            needs_attention: filter.needs_attention,
            cleaner: filter.cleaner.as_ref().map(ToString::to_string),
            received_from: filter.received_from,
            received_to: filter.received_to,
            today: None,
            at_risk_days: i64::from(self.config().policy.at_risk_days),
        };
        // One more than asked tells whether another page exists.
        let mut rows = store
            .list_requests(&filter, after, limit.saturating_add(1))
            .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| r.id)
        } else {
            None
        };
        Ok(ListPage { rows, next_cursor })
    }

    /// The dashboard figures as of `today`.
    pub async fn stats(&self, today: NaiveDate) -> Result<StatsView, RequestError> {
        let store = self.projections_or_refuse()?;
        let at_risk_days = self.config().policy.at_risk_days;
        Ok(compute_stats(store, at_risk_days, today).await?)
    }

    /// Whether the database answers (and is migrated), within `[database] ready_timeout`:
    /// [`RequestError::Unavailable`] when it does not answer in time.
    pub async fn ready(&self) -> Result<(), RequestError> {
        // Its own bound, below the pool's: a probe with a 1 s time-out must get an answer, and
        // a connection that hangs (a network partition rather than a refusal) must not hold it.
        let bound = self.config().database.ready_timeout.0;
        match tokio::time::timeout(bound, self.store().ping()).await {
            Ok(answer) => Ok(answer?),
            Err(_) => {
                tracing::warn!(
                    timeout_ms = bound.as_millis(),
                    "database did not answer the readiness check in time"
                );
                Err(RequestError::Unavailable(format!(
                    "no answer within {} ms",
                    bound.as_millis()
                )))
            }
        }
    }
}
