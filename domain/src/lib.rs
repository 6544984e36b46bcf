//! The pure core of Lethe.
//!
//! Everything here decides and nothing here does: no IO, no clock, no randomness. Time, ids and
//! the policy that applies to a request arrive inside commands, so that the same command on the
//! same state always yields the same events. The engine crate does the IO around it.
//!
//! - [`DeletionRequest`] is the aggregate (it implements [`esrs::Aggregate`]).
//! - [`Command`] is what may be asked of it, [`Event`] what it records.
//! - [`RequestState`] is the fold of its events; [`RequestStatus`] is the status users see.
//! - [`policy`] holds the rules that are data: grace period, reminders, legal deadlines, retries.
//! - [`redact`] keeps the subject's identifiers out of what a cleaner's result records.

pub mod aggregate;
pub mod command;
pub mod error;
pub mod event;
mod grace;
pub mod ids;
pub mod policy;
pub mod redact;
pub mod state;
pub mod subject;
pub mod suppression;

pub use aggregate::DeletionRequest;
pub use command::Command;
pub use error::DomainError;
pub use event::Event;
pub use ids::{CleanerName, Jurisdiction, RequestId, StoreName};
pub use policy::{DeadlineRule, RequestPolicy, RetryPolicy, Span};
pub use state::{CleanerState, RequestState, RequestStatus};
pub use subject::{SealedSubject, Subject, SubjectRecord};

/// Re-exported so that callers need not depend on `esrs` to drive the aggregate.
pub use esrs::Aggregate;
