//! Suppression after erasure (opt-in): a completed request's subject kept as keyed hashes
//! ([`Suppressed`]), lifted by an administrator with a reason ([`SuppressionLifted`]), and a
//! new request whose subject matches them flagged ([`PreviouslyErased`]). The hashes are
//! computed by the engine (it holds the key); the aggregate decides when they may be kept.
//!
//! Invariants: a subject is kept only once its request is completed, and once; only a
//! suppression in force may be lifted, with a reason; a request is flagged once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::error::DomainError;
use crate::event::{Event, PreviouslyErased, Suppressed, SuppressionLifted};
use crate::state::{Phase, Request};

/// A request's suppression as folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub since: DateTime<Utc>,
    /// When its entries stop answering (none: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted: Option<Lifted>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifted {
    pub at: DateTime<Utc>,
    pub reason: String,
}

impl Suppression {
    /// Whether its entries answer at `at`: not lifted, not expired.
    pub fn in_force(&self, at: DateTime<Utc>) -> bool {
        self.lifted.is_none() && self.expires_at.is_none_or(|expires| at < expires)
    }
}

/// Whether `command` is one of suppression's (decided by [`decide`] whatever the phase).
pub const fn concerns(command: &Command) -> bool {
    matches!(
        command,
        Command::Suppress { .. }
            | Command::LiftSuppression { .. }
            | Command::FlagPreviouslyErased { .. }
    )
}

/// Decides a suppression command (see the invariants above).
pub fn decide(request: &Request, command: Command) -> Result<Vec<Event>, DomainError> {
    match command {
        Command::Suppress {
            hashes,
            expires_at,
            at,
        } => {
            if !matches!(request.phase, Phase::Completed { .. }) {
                return Err(DomainError::NotCompleted);
            }
            if request.suppression.is_some() {
                return Err(DomainError::AlreadySuppressed);
            }
            if hashes.is_empty() {
                return Err(DomainError::NothingToSuppress);
            }
            Ok(vec![Event::Suppressed(Suppressed {
                hashes,
                expires_at,
                at,
            })])
        }
        Command::LiftSuppression { at, reason } => {
            let reason = reason.trim();
            if reason.is_empty() {
                return Err(DomainError::ReasonRequired);
            }
            match &request.suppression {
                Some(suppression) if suppression.lifted.is_none() => {
                    Ok(vec![Event::SuppressionLifted(SuppressionLifted {
                        reason: reason.to_owned(),
                        at,
                    })])
                }
                _ => Err(DomainError::NotSuppressed),
            }
        }
        Command::FlagPreviouslyErased { requests, at } => {
            if requests.is_empty() || !request.previously_erased.is_empty() {
                return Ok(vec![]);
            }
            Ok(vec![Event::PreviouslyErased(PreviouslyErased {
                requests,
                at,
            })])
        }
        other => unreachable!("not a suppression command: {other:?}"),
    }
}

/// Folds a suppression event into the request.
pub fn evolve(request: &mut Request, event: Event) {
    match event {
        Event::Suppressed(Suppressed { expires_at, at, .. }) => {
            request.suppression = Some(Suppression {
                since: at,
                expires_at,
                lifted: None,
            });
        }
        Event::SuppressionLifted(SuppressionLifted { reason, at }) => {
            if let Some(suppression) = &mut request.suppression {
                suppression.lifted = Some(Lifted { at, reason });
            }
        }
        Event::PreviouslyErased(PreviouslyErased { requests, .. }) => {
            request.previously_erased = requests;
        }
        _ => {}
    }
}
