//! The `DeletionRequest` aggregate: checks each command against the state and decides the
//! events; folds events into the state. Both are pure functions (see [`esrs::Aggregate`]).
//!
//! Invariants enforced here, each with its own [`DomainError`]:
//! - cancel only before Due; reject only before Due;
//! - nothing after a closed state (Completed, Cancelled, Rejected), except shredding and a
//!   reminder's outcome;
//! - a reminder has at most one outcome (sent, or not sent and why); a repeat changes nothing;
//! - a duplicate cleaner result (same cleaner, same attempt) changes nothing;
//! - Completed only when every planned cleaner succeeded or was skipped (and then at once);
//! - Due never while on hold, never before the grace period ends unless expedited, and once.

use std::collections::BTreeMap;

use crate::command::Command;
use crate::error::DomainError;
use crate::event::{
    Cancelled, CleanerFailed, CleanerRetried, CleanerSkipped, CleanerSucceeded, Completed,
    DeadlineExtended, Due, Event, HoldPlaced, HoldReleased, Received, Rejected, Reminded,
    ReminderNotSent, ReminderSent, Shredded,
};
use crate::ids::CleanerName;
use crate::policy::Span;
use crate::state::{
    CleanerProgress, CleanerState, Cleaning, Hold, Phase, Reminder, ReminderOutcome, Request,
    RequestState,
};
use crate::suppression;

/// The aggregate type. It has no data of its own: state lives in [`RequestState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DeletionRequest;

impl esrs::Aggregate for DeletionRequest {
    const NAME: &'static str = "deletion_request";
    type State = RequestState;
    type Command = Command;
    type Event = Event;
    type Error = DomainError;

    fn handle_command(state: &RequestState, command: Command) -> Result<Vec<Event>, DomainError> {
        let request = match (state, command) {
            (RequestState::NotReceived, Command::Receive(receive)) => {
                return Ok(vec![crate::grace::receive_event(receive)]);
            }
            (RequestState::Received(_), Command::Receive(_)) => {
                return Err(DomainError::AlreadyReceived)
            }
            (RequestState::NotReceived, _) => return Err(DomainError::NotReceived),
            (RequestState::Received(request), command) => (request, command),
        };
        decide(request.0, request.1)
    }

    fn apply_event(state: RequestState, event: Event) -> RequestState {
        match (state, event) {
            (RequestState::NotReceived, Event::Received(received)) => {
                RequestState::Received(Box::new(request_from(received)))
            }
            (RequestState::Received(mut request), event) => {
                evolve(&mut request, event);
                RequestState::Received(request)
            }
            // The store only ever holds streams that start with `Received`.
            (RequestState::NotReceived, event) => {
                panic!("{} before Received", event.event_type())
            }
        }
    }
}

impl DeletionRequest {
    /// Folds a whole stream from nothing.
    pub fn fold(events: impl IntoIterator<Item = Event>) -> RequestState {
        events
            .into_iter()
            .fold(RequestState::default(), |state, event| {
                <Self as esrs::Aggregate>::apply_event(state, event)
            })
    }
}

fn require_reason(reason: &str) -> Result<String, DomainError> {
    let reason = reason.trim();
    if reason.is_empty() {
        Err(DomainError::ReasonRequired)
    } else {
        Ok(reason.to_owned())
    }
}

// Longer than 100 lines: one match with an arm per command reads better than a function per
// arm; each arm is short and names the invariant it checks.
#[allow(clippy::too_many_lines)]
fn decide(request: &Request, command: Command) -> Result<Vec<Event>, DomainError> {
    let status = request.status();
    if status.is_closed() {
        return match command {
            Command::Shred { .. } if request.shredded => Ok(vec![]),
            Command::Shred { at } => Ok(vec![Event::Shredded(Shredded { at })]),
            // A fact about a notification, not a change to the request (ADR 16): a call in
            // flight when the request closed may still be accepted, and a reminder that can
            // no longer be useful must still say so.
            command @ (Command::RecordReminderSent { .. }
            | Command::RecordReminderNotSent { .. }) => settle_reminder(request, command),
            Command::RecordCleanerSuccess {
                cleaner, attempt, ..
            }
            | Command::RecordCleanerFailure {
                cleaner, attempt, ..
            } if is_late_duplicate(request, &cleaner, attempt) => Ok(vec![]),
            command if suppression::concerns(&command) => suppression::decide(request, command),
            _ => Err(DomainError::Closed { status }),
        };
    }
    match command {
        Command::Receive(_) => Err(DomainError::AlreadyReceived),
        Command::Shred { .. } => Err(DomainError::NotClosed),
        command @ (Command::RecordReminderSent { .. } | Command::RecordReminderNotSent { .. }) => {
            settle_reminder(request, command)
        }
        Command::Approve { at, policy, reason } => {
            crate::grace::approve(request, at, &policy, reason)
        }
        Command::Cancel { at, reason } => {
            if !matches!(request.phase, Phase::Grace) {
                return Err(DomainError::CancelAfterDue);
            }
            Ok(vec![Event::Cancelled(Cancelled { at, reason })])
        }
        Command::Reject { at, reason } => {
            let reason = require_reason(&reason)?;
            if !matches!(request.phase, Phase::Grace) {
                return Err(DomainError::RejectAfterDue);
            }
            Ok(vec![Event::Rejected(Rejected { at, reason })])
        }
        Command::PlaceHold { at, reason } => {
            let reason = require_reason(&reason)?;
            if request.hold.is_some() {
                return Err(DomainError::AlreadyOnHold);
            }
            Ok(vec![Event::HoldPlaced(HoldPlaced { at, reason })])
        }
        Command::ReleaseHold { at, reason } => {
            if request.hold.is_none() {
                return Err(DomainError::NotOnHold);
            }
            Ok(vec![Event::HoldReleased(HoldReleased { at, reason })])
        }
        Command::ExtendDeadline { at, by, reason } => {
            let reason = require_reason(&reason)?;
            if by.is_zero() {
                return Err(DomainError::EmptyExtension);
            }
            let received = request.received_at.date_naive();
            let requested = request
                .deadline_rule
                .deadline(received, request.extension.plus(by));
            let maximum = request.deadline_rule.latest_deadline(received);
            if requested > maximum {
                return Err(DomainError::ExtensionExceedsMaximum { requested, maximum });
            }
            Ok(vec![Event::DeadlineExtended(DeadlineExtended {
                at,
                by,
                reason,
                deadline: requested,
            })])
        }
        Command::MarkDue {
            at,
            cleaners,
            expedite,
            reason,
        } => {
            if !matches!(request.phase, Phase::Grace) {
                // The timer fired twice, or an expedite raced the timer: already due.
                return Ok(vec![]);
            }
            if request.hold.is_some() {
                return Err(DomainError::OnHold);
            }
            if request.awaiting_approval {
                return Err(DomainError::AwaitingApproval);
            }
            if !expedite && at < request.due_at {
                return Err(DomainError::NotYetDue);
            }
            let mut events = vec![Event::Due(Due {
                at,
                cleaners: cleaners.clone(),
                expedited: expedite,
                reason: reason.filter(|_| expedite),
            })];
            // A request that no cleaner's rule selects has nothing left to do.
            if cleaners.is_empty() {
                events.push(Event::Completed(Completed {
                    at,
                    stores: Vec::new(),
                }));
            }
            Ok(events)
        }
        Command::RecordCleanerSuccess {
            cleaner,
            attempt,
            at,
            deleted,
            detail,
        } => {
            let (cleaning, progress) = cleaner_in_plan(request, &cleaner)?;
            match progress.state {
                CleanerState::Succeeded { .. } | CleanerState::Skipped { .. } => return Ok(vec![]),
                // A success for any attempt already made counts: a late answer to an attempt
                // that timed out still means the data is gone.
                CleanerState::Pending | CleanerState::Exhausted => {
                    // An exhausted cleaner has no attempt in flight: only attempts already made.
                    let last_sent = if progress.state == CleanerState::Exhausted {
                        progress.attempts
                    } else {
                        progress.next_attempt()
                    };
                    if attempt == 0 || attempt > last_sent {
                        return Err(DomainError::UnknownAttempt {
                            cleaner,
                            attempt,
                            next: progress.next_attempt(),
                        });
                    }
                }
            }
            let mut events = vec![Event::CleanerSucceeded(CleanerSucceeded {
                cleaner: cleaner.clone(),
                attempt,
                at,
                deleted,
                detail,
            })];
            if all_done_without(cleaning, &cleaner) {
                events.push(Event::Completed(Completed {
                    at,
                    stores: cleaning.covered_stores(&cleaner, false),
                }));
            }
            Ok(events)
        }
        Command::RecordCleanerFailure {
            cleaner,
            attempt,
            at,
            error,
            status_code,
            retryable,
            retry_after_seconds,
        } => {
            let (_, progress) = cleaner_in_plan(request, &cleaner)?;
            if progress.state != CleanerState::Pending || attempt < progress.next_attempt() {
                // Duplicate or stale: the attempt already has its result, or the cleaner has
                // moved on (succeeded, skipped, exhausted).
                if attempt == 0 || attempt > progress.next_attempt() {
                    return Err(DomainError::UnknownAttempt {
                        cleaner,
                        attempt,
                        next: progress.next_attempt(),
                    });
                }
                return Ok(vec![]);
            }
            if attempt != progress.next_attempt() {
                return Err(DomainError::UnknownAttempt {
                    cleaner,
                    attempt,
                    next: progress.next_attempt(),
                });
            }
            let exhausted = !retryable || attempt >= progress.max_attempts;
            Ok(vec![Event::CleanerFailed(CleanerFailed {
                cleaner,
                attempt,
                at,
                error,
                status_code,
                retryable,
                retry_after_seconds,
                exhausted,
            })])
        }
        Command::RetryCleaner {
            cleaner,
            at,
            extra_attempts,
            reason,
        } => {
            let (_, progress) = cleaner_in_plan(request, &cleaner)?;
            if progress.state != CleanerState::Exhausted {
                return Err(DomainError::CleanerNotExhausted { cleaner });
            }
            Ok(vec![Event::CleanerRetried(CleanerRetried {
                cleaner,
                at,
                // Saturating: an administrator may ask for "as many as it takes" (u32::MAX).
                max_attempts: progress.attempts.saturating_add(extra_attempts.max(1)),
                reason,
            })])
        }
        Command::SkipCleaner {
            cleaner,
            at,
            reason,
        } => {
            let reason = require_reason(&reason)?;
            let (cleaning, progress) = cleaner_in_plan(request, &cleaner)?;
            if progress.is_done() {
                return Err(DomainError::CleanerAlreadyDone { cleaner });
            }
            let mut events = vec![Event::CleanerSkipped(CleanerSkipped {
                cleaner: cleaner.clone(),
                at,
                reason,
            })];
            if all_done_without(cleaning, &cleaner) {
                events.push(Event::Completed(Completed {
                    at,
                    stores: cleaning.covered_stores(&cleaner, true),
                }));
            }
            Ok(events)
        }
        command => suppression::decide(request, command),
    }
}

/// Records the outcome a reminder command reports, unless the reminder already has one (a
/// repeat records nothing). Any other command records nothing.
fn settle_reminder(request: &Request, command: Command) -> Result<Vec<Event>, DomainError> {
    let (index, event) = match command {
        Command::RecordReminderSent { index, at, calls } => (
            index,
            Event::ReminderSent(ReminderSent {
                index,
                at,
                // At least the call that was accepted.
                calls: calls.max(1),
            }),
        ),
        Command::RecordReminderNotSent {
            index,
            at,
            reason,
            calls,
            last_error,
        } => (
            index,
            Event::ReminderNotSent(ReminderNotSent {
                index,
                at,
                reason,
                calls,
                last_error,
            }),
        ),
        _ => return Ok(vec![]),
    };
    let count = u32::try_from(request.reminders.len()).unwrap_or(u32::MAX);
    let reminder = request
        .reminders
        .get(index as usize)
        .ok_or(DomainError::UnknownReminder { index, count })?;
    if reminder.is_resolved() {
        return Ok(vec![]);
    }
    Ok(vec![event])
}

/// A result that arrives after the request closed, for an attempt whose outcome is known.
fn is_late_duplicate(request: &Request, cleaner: &CleanerName, attempt: u32) -> bool {
    request
        .cleaning()
        .and_then(|cleaning| cleaning.cleaners.get(cleaner))
        .is_some_and(|progress| {
            progress.is_done() && attempt >= 1 && attempt <= progress.next_attempt()
        })
}

fn cleaner_in_plan<'a>(
    request: &'a Request,
    cleaner: &CleanerName,
) -> Result<(&'a Cleaning, &'a CleanerProgress), DomainError> {
    let Phase::Cleaning(cleaning) = &request.phase else {
        return Err(DomainError::NotDue);
    };
    let progress = cleaning
        .cleaners
        .get(cleaner)
        .ok_or_else(|| DomainError::UnknownCleaner {
            cleaner: cleaner.clone(),
        })?;
    Ok((cleaning, progress))
}

/// Whether every cleaner but `finishing` is done (so `finishing` completes the request).
fn all_done_without(cleaning: &Cleaning, finishing: &CleanerName) -> bool {
    cleaning
        .cleaners
        .iter()
        .all(|(name, progress)| name == finishing || progress.is_done())
}

fn request_from(received: Received) -> Request {
    Request {
        id: received.request_id,
        subject: received.subject,
        jurisdiction: received.jurisdiction,
        source: received.source,
        reason: received.reason,
        external_id: received.external_id,
        tags: received.tags,
        received_at: received.received_at,
        due_at: received.due_at,
        reminders: received
            .reminders
            .into_iter()
            .map(|at| Reminder {
                at,
                outcome: ReminderOutcome::Pending,
            })
            .collect(),
        deadline_rule: received.deadline_rule,
        deadline: received.deadline,
        extension: Span::default(),
        hold: None,
        phase: Phase::Grace,
        shredded: false,
        suppression: None,
        previously_erased: Vec::new(),
        awaiting_approval: received.awaiting_approval,
    }
}

// Longer than 100 lines: one match with an arm per event, each a few lines of folding.
fn evolve(request: &mut Request, event: Event) {
    match event {
        Event::Received(_) => panic!("Received twice in one stream"),
        Event::Approved(approved) => crate::grace::approved(request, approved),
        Event::Reminded(Reminded { index, at }) => {
            if let Some(reminder) = request.reminders.get_mut(index as usize) {
                if reminder.outcome == ReminderOutcome::Pending {
                    reminder.outcome = ReminderOutcome::Reminded { at };
                }
            }
        }
        Event::ReminderSent(ReminderSent { index, at, .. }) => {
            if let Some(reminder) = request.reminders.get_mut(index as usize) {
                reminder.outcome = ReminderOutcome::Sent { at };
            }
        }
        Event::ReminderNotSent(ReminderNotSent {
            index, at, reason, ..
        }) => {
            if let Some(reminder) = request.reminders.get_mut(index as usize) {
                reminder.outcome = ReminderOutcome::NotSent { at, reason };
            }
        }
        Event::Cancelled(Cancelled { at, reason }) => {
            request.phase = Phase::Cancelled { at, reason }
        }
        Event::Rejected(Rejected { at, reason }) => request.phase = Phase::Rejected { at, reason },
        Event::HoldPlaced(HoldPlaced { at, reason }) => {
            request.hold = Some(Hold { since: at, reason });
        }
        Event::HoldReleased(_) => request.hold = None,
        Event::DeadlineExtended(DeadlineExtended { by, deadline, .. }) => {
            request.extension = request.extension.plus(by);
            request.deadline = deadline;
        }
        Event::Due(Due {
            at,
            cleaners,
            expedited,
            ..
        }) => {
            let cleaners: BTreeMap<_, _> = cleaners
                .into_iter()
                .map(|planned| {
                    let progress = CleanerProgress {
                        max_attempts: planned.max_attempts,
                        attempts: 0,
                        state: CleanerState::Pending,
                        last_error: None,
                        stores: planned.stores,
                    };
                    (planned.name, progress)
                })
                .collect();
            request.phase = Phase::Cleaning(Cleaning {
                became_due_at: at,
                expedited,
                cleaners,
            });
        }
        Event::CleanerSucceeded(CleanerSucceeded {
            cleaner,
            attempt,
            at,
            ..
        }) => {
            if let Some(progress) = progress_mut(request, &cleaner) {
                progress.attempts = progress.attempts.max(attempt);
                progress.state = CleanerState::Succeeded { attempt, at };
            }
        }
        Event::CleanerFailed(CleanerFailed {
            cleaner,
            attempt,
            error,
            exhausted,
            ..
        }) => {
            if let Some(progress) = progress_mut(request, &cleaner) {
                progress.attempts = progress.attempts.max(attempt);
                progress.last_error = Some(error);
                if exhausted {
                    progress.state = CleanerState::Exhausted;
                }
            }
        }
        Event::CleanerRetried(CleanerRetried {
            cleaner,
            max_attempts,
            ..
        }) => {
            if let Some(progress) = progress_mut(request, &cleaner) {
                progress.max_attempts = max_attempts;
                progress.state = CleanerState::Pending;
            }
        }
        Event::CleanerSkipped(CleanerSkipped {
            cleaner,
            at,
            reason,
        }) => {
            if let Some(progress) = progress_mut(request, &cleaner) {
                progress.state = CleanerState::Skipped { at, reason };
            }
        }
        Event::Completed(Completed { at, .. }) => {
            let phase = std::mem::replace(&mut request.phase, Phase::Grace);
            request.phase = match phase {
                Phase::Cleaning(cleaning) => Phase::Completed {
                    cleaning,
                    completed_at: at,
                },
                other => panic!("Completed in phase {other:?}"),
            };
        }
        Event::Shredded(_) => request.shredded = true,
        event => suppression::evolve(request, event),
    }
}

fn progress_mut<'a>(
    request: &'a mut Request,
    cleaner: &CleanerName,
) -> Option<&'a mut CleanerProgress> {
    match &mut request.phase {
        Phase::Cleaning(cleaning) => cleaning.cleaners.get_mut(cleaner),
        _ => None,
    }
}
