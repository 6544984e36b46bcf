//! The `requests` projection: one row per request, for lists, filters and dashboards. It holds
//! no personal data (no subject identifiers), so it never needs shredding.

use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::event::{
    CleanerFailed, CleanerRetried, CleanerSkipped, CleanerSucceeded, DeadlineExtended, Due,
    Received,
};
use lethe_domain::{Event, RequestId, RequestStatus};
use serde::{Deserialize, Serialize};

/// One request as the projection sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRow {
    pub id: RequestId,
    pub status: RequestStatus,
    pub jurisdiction: String,
    pub source: Option<String>,
    pub tags: Vec<String>,
    pub received_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub deadline: NaiveDate,
    pub on_hold: bool,
    /// Received under a policy that requires approval, and not approved yet.
    #[serde(default)]
    pub awaiting_approval: bool,
    pub became_due_at: Option<DateTime<Utc>>,
    /// When it completed, was cancelled or rejected.
    pub closed_at: Option<DateTime<Utc>>,
    pub cleaners: Vec<CleanerRow>,
    /// The most recent cleaner error, if the request is not yet completed.
    pub last_error: Option<String>,
    pub shredded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanerRow {
    pub name: String,
    /// pending, succeeded, exhausted or skipped
    pub status: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    /// When the request became due, and when this cleaner finished: its time to erase.
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl RequestRow {
    /// The status users see, derived as the aggregate derives it.
    fn derive_status(&mut self) {
        self.status = match self.status {
            RequestStatus::Completed | RequestStatus::Cancelled | RequestStatus::Rejected => {
                self.status
            }
            _ if self.on_hold => RequestStatus::OnHold,
            _ if self.awaiting_approval => RequestStatus::AwaitingApproval,
            _ if self.became_due_at.is_none() => RequestStatus::Pending,
            _ if self.cleaners.iter().any(|c| c.status == "exhausted") => {
                RequestStatus::NeedsAttention
            }
            _ => RequestStatus::Due,
        };
    }

    fn cleaner(&mut self, name: &str) -> Option<&mut CleanerRow> {
        self.cleaners.iter_mut().find(|c| c.name == name)
    }

    pub const fn is_open(&self) -> bool {
        !self.status.is_closed()
    }

    /// The planned cleaners that have neither succeeded nor been skipped: pending, failing or
    /// out of attempts (the list's `cleaner` filter).
    pub fn unfinished_cleaners(&self) -> impl Iterator<Item = &str> {
        self.cleaners
            .iter()
            .filter(|c| c.status == "pending" || c.status == "exhausted")
            .map(|c| c.name.as_str())
    }
}

/// Folds one event into the row of its request. `None` before `Received`; an event other than
/// `Received` for a request the fold has not seen is ignored (returns `None`).
pub fn apply(row: Option<RequestRow>, event: &Event) -> Option<RequestRow> {
    if let Event::Received(received) = event {
        let mut row = received_row(received);
        row.derive_status();
        return Some(row);
    }
    let mut row = row?;
    match event {
        // The row holds no reminder; `show` folds the stream for those.
        Event::Received(_)
        | Event::Reminded(_)
        | Event::ReminderSent(_)
        | Event::ReminderNotSent(_) => {}
        Event::Cancelled(e) => {
            row.status = RequestStatus::Cancelled;
            row.closed_at = Some(e.at);
        }
        Event::Rejected(e) => {
            row.status = RequestStatus::Rejected;
            row.closed_at = Some(e.at);
        }
        Event::Approved(e) => {
            row.awaiting_approval = false;
            row.due_at = e.due_at;
        }
        Event::HoldPlaced(_) => row.on_hold = true,
        Event::HoldReleased(_) => row.on_hold = false,
        Event::DeadlineExtended(DeadlineExtended { deadline, .. }) => row.deadline = *deadline,
        Event::Due(Due { at, cleaners, .. }) => {
            row.became_due_at = Some(*at);
            row.cleaners = cleaners
                .iter()
                .map(|planned| CleanerRow {
                    name: planned.name.to_string(),
                    status: "pending".to_owned(),
                    attempts: 0,
                    max_attempts: planned.max_attempts,
                    last_error: None,
                    started_at: *at,
                    finished_at: None,
                })
                .collect();
        }
        Event::CleanerSucceeded(CleanerSucceeded {
            cleaner,
            attempt,
            at,
            ..
        }) => {
            if let Some(c) = row.cleaner(cleaner.as_str()) {
                c.status = "succeeded".to_owned();
                c.attempts = c.attempts.max(*attempt);
                c.finished_at = Some(*at);
            }
        }
        Event::CleanerFailed(CleanerFailed {
            cleaner,
            attempt,
            error,
            exhausted,
            ..
        }) => {
            if let Some(c) = row.cleaner(cleaner.as_str()) {
                c.attempts = c.attempts.max(*attempt);
                c.last_error = Some(error.clone());
                if *exhausted {
                    c.status = "exhausted".to_owned();
                }
            }
            row.last_error = Some(format!("{cleaner}: {error}"));
        }
        Event::CleanerRetried(CleanerRetried {
            cleaner,
            max_attempts,
            ..
        }) => {
            if let Some(c) = row.cleaner(cleaner.as_str()) {
                c.status = "pending".to_owned();
                c.max_attempts = *max_attempts;
            }
        }
        Event::CleanerSkipped(CleanerSkipped { cleaner, at, .. }) => {
            if let Some(c) = row.cleaner(cleaner.as_str()) {
                c.status = "skipped".to_owned();
                c.finished_at = Some(*at);
            }
        }
        Event::Completed(e) => {
            row.status = RequestStatus::Completed;
            row.closed_at = Some(e.at);
            row.last_error = None;
        }
        Event::Shredded(_) => row.shredded = true,
        // Suppression is kept in its own table (the engine's `suppressions`), not in the row.
        Event::Suppressed(_) | Event::SuppressionLifted(_) | Event::PreviouslyErased(_) => {}
    }
    row.derive_status();
    Some(row)
}

fn received_row(received: &Received) -> RequestRow {
    RequestRow {
        id: received.request_id,
        status: RequestStatus::Pending,
        jurisdiction: received.jurisdiction.to_string(),
        source: received.source.clone(),
        tags: received.tags.clone(),
        received_at: received.received_at,
        due_at: received.due_at,
        deadline: received.deadline,
        on_hold: false,
        awaiting_approval: received.awaiting_approval,
        became_due_at: None,
        closed_at: None,
        cleaners: Vec::new(),
        last_error: None,
        shredded: false,
    }
}

/// Whole days from `today` to the deadline (negative when overdue).
pub fn days_left(deadline: NaiveDate, today: NaiveDate) -> i64 {
    (deadline - today).num_days()
}
