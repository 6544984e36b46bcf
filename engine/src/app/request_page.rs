//! What a person's page of one request reads (the dashboard's request page): the request's
//! state as [`Requests::show`] gives it (cleaners' progress included), its history as
//! [`Requests::history`] gives it, from one read of the stream, and when each cleaner is next
//! to be called, from the workflow's schedule.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lethe_domain::{CleanerName, RequestId};

use super::views::{HistoryView, RequestView};
use super::{RequestError, Requests};
use crate::store::StoreError;

/// A cleaner's next attempt, as the workflow has it scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextAttempt {
    /// `None`: the first attempt of every planned cleaner that has had none (one job per
    /// request, ADR 10).
    pub cleaner: Option<CleanerName>,
    pub attempt: u32,
    /// When it is due to be made (a retry's backoff, a window, a limit may move it later).
    pub at: DateTime<Utc>,
}

/// Where the next attempts are scheduled: the workflow's dispatch jobs.
#[async_trait]
pub trait AttemptSchedule: Send + Sync + std::fmt::Debug {
    /// The request's scheduled cleaner attempts.
    async fn next_attempts(&self, request_id: RequestId) -> Result<Vec<NextAttempt>, StoreError>;
}

/// A request as its page shows it.
#[derive(Debug)]
pub struct RequestPage {
    pub view: RequestView,
    pub history: HistoryView,
    /// Empty in a process that runs no workflow.
    pub next_attempts: Vec<NextAttempt>,
}

impl RequestPage {
    /// When `cleaner`'s next attempt is due, if one is scheduled: its own retry, or the first
    /// attempt of every cleaner when it has had none.
    pub fn next_attempt_of(&self, cleaner: &str, attempts_made: u32) -> Option<&NextAttempt> {
        self.next_attempts.iter().find(|next| match &next.cleaner {
            Some(name) => name.as_str() == cleaner,
            None => attempts_made == 0,
        })
    }
}

impl Requests {
    /// The request's page: its state, its history and its cleaners' next attempts.
    pub async fn request_page(&self, id: RequestId) -> Result<RequestPage, RequestError> {
        let (head, loaded, subject) = self
            .history_of(id)
            .await?
            .ok_or(RequestError::NotFound(id))?;
        let history = HistoryView::new(&loaded, head.as_ref(), subject, false)?;
        let view = self
            .view_with_progress(RequestView::new(&loaded), id)
            .await?;
        let next_attempts = match self.schedule() {
            Some(schedule) => schedule.next_attempts(id).await?,
            None => Vec::new(),
        };
        Ok(RequestPage {
            view,
            history,
            next_attempts,
        })
    }
}
