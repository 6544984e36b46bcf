//! Typed rejections: bad input (a field is wrong) and domain rejections (the command is not
//! allowed in the request's current state).

use thiserror::Error;

use crate::ids::CleanerName;
use crate::state::RequestStatus;

/// A value that failed validation, with the name of the field it came from, so that an HTTP
/// caller or a config file author is told exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct InvalidInput {
    pub field: String,
    pub message: String,
}

impl InvalidInput {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field with its parent, e.g. `email` inside `subject` becomes `subject.email`.
    #[must_use]
    pub fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

/// Why the aggregate refused a command. Each variant is one invariant of the aggregate (see
/// docs/ARCHITECTURE.md, "The aggregate's invariants").
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("the request has already been received")]
    AlreadyReceived,
    #[error("no such request has been received")]
    NotReceived,
    #[error("the request is {status} and can no longer change")]
    Closed { status: RequestStatus },
    #[error("the request awaits approval")]
    AwaitingApproval,
    #[error("the request does not await approval")]
    NotAwaitingApproval,
    #[error("a request can be cancelled only during its grace period")]
    CancelAfterDue,
    #[error("a request can be rejected only before it is due")]
    RejectAfterDue,
    #[error("the request is on hold")]
    OnHold,
    #[error("the request is already on hold")]
    AlreadyOnHold,
    #[error("the request is not on hold")]
    NotOnHold,
    #[error("the grace period has not ended yet")]
    NotYetDue,
    #[error("the request is not due yet, so no cleaner has been asked")]
    NotDue,
    #[error("cleaner {cleaner} is not part of this request's plan")]
    UnknownCleaner { cleaner: CleanerName },
    #[error("cleaner {cleaner} was never asked for attempt {attempt} (next attempt is {next})")]
    UnknownAttempt {
        cleaner: CleanerName,
        attempt: u32,
        next: u32,
    },
    #[error("cleaner {cleaner} has already succeeded or been skipped")]
    CleanerAlreadyDone { cleaner: CleanerName },
    #[error("cleaner {cleaner} is not exhausted, so there is nothing to retry")]
    CleanerNotExhausted { cleaner: CleanerName },
    #[error("reminder {index} does not exist (the request has {count})")]
    UnknownReminder { index: u32, count: u32 },
    #[error("a reason is required")]
    ReasonRequired,
    #[error("an extension must add at least one day")]
    EmptyExtension,
    #[error("the extension would move the deadline to {requested}, past the maximum {maximum}")]
    ExtensionExceedsMaximum {
        requested: chrono::NaiveDate,
        maximum: chrono::NaiveDate,
    },
    #[error("personal data can be shredded only once the request is closed")]
    NotClosed,
    #[error("a subject is kept for suppression only once its request is completed")]
    NotCompleted,
    #[error("the request's subject is already kept for suppression")]
    AlreadySuppressed,
    #[error("there is no suppression entry in force to lift (none recorded, or lifted)")]
    NotSuppressed,
    #[error("a suppression needs at least one identifier's hash")]
    NothingToSuppress,
}
