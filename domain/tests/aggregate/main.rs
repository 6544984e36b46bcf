//! The `DeletionRequest` aggregate, one behaviour per test, in given/when/then form: receipt
//! (due date, reminders, deadline), every invariant the aggregate enforces, and the status a
//! folded history shows.

#[path = "../support/mod.rs"]
mod support;

mod approval;
mod cleaner_results;
mod extensions;
mod holds_and_due;
mod receive;
mod reminders;
mod suppression;

use chrono::TimeDelta;
use lethe_domain::event::{
    Cancelled, CleanerRetried, DeadlineExtended, Due, Rejected, Reminded, ReminderNotSent,
    ReminderNotSentReason, ReminderSent, Shredded,
};
use lethe_domain::state::ReminderOutcome;
use lethe_domain::{
    CleanerState, Command, DeadlineRule, DomainError, Event, RequestPolicy, RequestStatus, Span,
};

use support::*;

fn closed_histories() -> Vec<(RequestStatus, Vec<Event>)> {
    vec![
        (
            RequestStatus::Completed,
            vec![
                received(),
                due(&[("billing", 3)]),
                succeeded("billing", 1, after_due(1)),
                completed(after_due(1)),
            ],
        ),
        (
            RequestStatus::Cancelled,
            vec![
                received(),
                Event::Cancelled(Cancelled {
                    at: during_grace(),
                    reason: None,
                }),
            ],
        ),
        (
            RequestStatus::Rejected,
            vec![
                received(),
                Event::Rejected(Rejected {
                    at: during_grace(),
                    reason: "duplicate".to_owned(),
                }),
            ],
        ),
    ]
}
