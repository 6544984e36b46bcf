//! Progress of a long erasure: a cleaner that accepted a request (answered 202, or was told
//! over Kafka) and is still working may say how far it has come. Each report is a heartbeat:
//! it moves the attempt's callback deadline to a full `callback_timeout` from now. It is not
//! an event: only the latest report is kept, beside the awaited attempt (ADR 36), and it goes
//! when the attempt's result is recorded.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use lethe_domain::state::CleanerState;
use lethe_domain::{CleanerName, RequestId};
use serde::Serialize;

use super::views::RequestView;
use super::{RequestError, Requests};
use crate::store::StoreError;

/// How far a cleaner says it has come, e.g. 1,200 of 5,000 rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Items done so far.
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub done: u64,
    /// Items in all, when the cleaner knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub total: Option<u64>,
}

impl Progress {
    /// The largest count a store keeps (a signed 64-bit integer).
    pub const MAX: u64 = i64::MAX as u64;

    /// A report with `done` at most `total` and both within [`Self::MAX`].
    pub fn new(done: u64, total: Option<u64>) -> Result<Self, ProgressError> {
        if done > Self::MAX {
            return Err(ProgressError::TooLarge("progress.done"));
        }
        if let Some(total) = total {
            if total > Self::MAX {
                return Err(ProgressError::TooLarge("progress.total"));
            }
            if done > total {
                return Err(ProgressError::DonePastTotal { done, total });
            }
        }
        Ok(Self { done, total })
    }
}

/// Why a progress report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgressError {
    /// The named count is above [`Progress::MAX`]: not a count a store keeps.
    #[error("must be at most {}", Progress::MAX)]
    TooLarge(&'static str),
    /// Each count within range, but more done than there is in all: well-formed counts that
    /// contradict each other.
    #[error("{done} is more than progress.total ({total})")]
    DonePastTotal { done: u64, total: u64 },
}

impl ProgressError {
    /// The field at fault.
    pub const fn field(&self) -> &'static str {
        match self {
            Self::TooLarge(field) => field,
            Self::DonePastTotal { .. } => "progress.done",
        }
    }
}

/// The latest progress of one awaited attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanerProgress {
    pub cleaner: CleanerName,
    pub attempt: u32,
    pub progress: Progress,
    /// When it was reported.
    pub at: DateTime<Utc>,
    /// When the attempt fails unless its result (or more progress) comes.
    pub deadline: DateTime<Utc>,
}

/// Where awaited attempts are kept: the workflow's callback jobs.
#[async_trait]
pub trait AwaitedResults: Send + Sync + std::fmt::Debug {
    /// Keeps `progress` for `cleaner`'s attempt `attempt` of the request and moves its
    /// deadline to `deadline`, if that attempt's result is awaited and its deadline is after
    /// `now` (and no worker is failing it right now). Returns whether it was.
    async fn heartbeat(
        &self,
        request_id: RequestId,
        reported: &CleanerProgress,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// The latest progress of each of the request's awaited attempts that reported any.
    async fn progress_of(&self, request_id: RequestId) -> Result<Vec<CleanerProgress>, StoreError>;
}

impl Requests {
    /// Records `cleaner`'s progress on attempt `attempt` as a heartbeat, and answers the
    /// request as it stands with it. [`RequestError::NotAwaited`] when no such attempt awaits
    /// its result (it came, its deadline passed, or it was never made).
    pub async fn record_progress(
        &self,
        id: RequestId,
        cleaner: &CleanerName,
        attempt: u32,
        progress: Progress,
    ) -> Result<RequestView, RequestError> {
        let not_awaited = || RequestError::NotAwaited {
            cleaner: cleaner.clone(),
            attempt,
        };
        let loaded = self.load(id).await?.ok_or(RequestError::NotFound(id))?;
        // The log is the truth: once the attempt's result is recorded, its callback job may
        // linger until the saga removes it, and must not take reports meanwhile.
        let in_flight = loaded
            .request
            .cleaning()
            .and_then(|c| c.cleaners.get(cleaner))
            .is_some_and(|c| c.state == CleanerState::Pending && c.next_attempt() == attempt);
        let timeout = self
            .config()
            .cleaner(cleaner)
            .filter(|_| in_flight)
            .map(|c| c.callback_timeout.0)
            .ok_or_else(not_awaited)?;
        let now = Utc::now();
        let reported = CleanerProgress {
            cleaner: cleaner.clone(),
            attempt,
            progress,
            at: now,
            deadline: now + TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX),
        };
        let awaited = match self.awaited() {
            Some(awaited) => awaited.heartbeat(id, &reported, now).await?,
            None => false,
        };
        if !awaited {
            return Err(not_awaited());
        }
        self.view_with_progress(RequestView::new(&loaded), id).await
    }

    /// `view` with the latest progress of its awaited attempts.
    pub(super) async fn view_with_progress(
        &self,
        view: RequestView,
        id: RequestId,
    ) -> Result<RequestView, RequestError> {
        let progress = match self.awaited() {
            Some(awaited) => awaited.progress_of(id).await?,
            None => Vec::new(),
        };
        Ok(view.with_progress(&progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_refused_naming_the_field_at_fault() {
        assert_eq!(
            Progress::new(5, Some(10)),
            Ok(Progress {
                done: 5,
                total: Some(10)
            })
        );
        assert_eq!(Progress::new(7, None).map(|p| p.total), Ok(None));
        assert_eq!(
            Progress::new(11, Some(10)),
            Err(ProgressError::DonePastTotal {
                done: 11,
                total: 10
            })
        );
        assert_eq!(
            Progress::new(Progress::MAX + 1, None).unwrap_err().field(),
            "progress.done"
        );
        assert_eq!(
            Progress::new(1, Some(Progress::MAX + 1))
                .unwrap_err()
                .field(),
            "progress.total"
        );
        assert!(Progress::new(Progress::MAX, Some(Progress::MAX)).is_ok());
    }
}
