//! The grace period: when it ends and when the subject is reminded, counted from receipt, or
//! from approval when the policy requires one. The legal deadline is always counted from
//! receipt.

use chrono::{DateTime, Utc};

use crate::command::Receive;
use crate::error::DomainError;
use crate::event::{Approved, Event, Received};
use crate::policy::{RequestPolicy, Span};
use crate::state::{Reminder, ReminderOutcome, Request};

/// The end of a grace period starting at `start`, and its reminders (earliest first, none at
/// or before `start`).
fn grace(start: DateTime<Utc>, policy: &RequestPolicy) -> (DateTime<Utc>, Vec<DateTime<Utc>>) {
    let due_at = start + policy.grace_period;
    let mut reminders: Vec<DateTime<Utc>> = policy
        .reminders
        .iter()
        .map(|before| due_at - *before)
        .filter(|at| *at > start)
        .collect();
    reminders.sort();
    reminders.dedup();
    (due_at, reminders)
}

pub(crate) fn receive_event(receive: Receive) -> Event {
    let Receive {
        request_id,
        subject,
        jurisdiction,
        source,
        reason,
        external_id,
        tags,
        received_at,
        policy,
    } = receive;
    let (due_at, mut reminders) = grace(received_at, &policy);
    // Reminders are scheduled by the approval, which restarts the grace period.
    if policy.approval_required {
        reminders.clear();
    }
    let deadline = policy
        .deadline
        .deadline(received_at.date_naive(), Span::default());
    Event::Received(Received {
        request_id,
        subject,
        jurisdiction,
        source,
        reason,
        external_id,
        tags,
        received_at,
        due_at,
        reminders,
        deadline_rule: policy.deadline,
        deadline,
        awaiting_approval: policy.approval_required,
    })
}

/// Approval: only of a request that awaits it (which is in its grace period, as closed
/// requests are refused before).
pub(crate) fn approve(
    request: &Request,
    at: DateTime<Utc>,
    policy: &RequestPolicy,
    reason: Option<String>,
) -> Result<Vec<Event>, DomainError> {
    if !request.awaiting_approval {
        return Err(DomainError::NotAwaitingApproval);
    }
    let (due_at, reminders) = grace(at, policy);
    Ok(vec![Event::Approved(Approved {
        at,
        due_at,
        reminders,
        reason,
    })])
}

pub(crate) fn approved(request: &mut Request, approved: Approved) {
    request.awaiting_approval = false;
    request.due_at = approved.due_at;
    request.reminders = approved
        .reminders
        .into_iter()
        .map(|at| Reminder {
            at,
            outcome: ReminderOutcome::Pending,
        })
        .collect();
}
