//! Property tests: random command sequences (every variant, a few cleaner names, attempts 0..5,
//! time moving forward, empty and real reasons, holds, releases and extensions) run through
//! `handle_command` and `apply_event` from nothing. After every step the emitted stream and the
//! state must keep the aggregate's invariants, a replay of the stream from its stored JSON form
//! must rebuild the same state, and no command may panic (proptest reports a panic as a failure).

#[path = "../support/mod.rs"]
mod support;

mod generate;
mod reading;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use proptest::prelude::*;

use lethe_domain::command::Receive;
use lethe_domain::event::{
    Completed, DeadlineExtended, Due, PlannedCleaner, ReminderNotSentReason,
};
use lethe_domain::state::{Phase, Request};
use lethe_domain::{
    Aggregate, Command, DeadlineRule, DeletionRequest, DomainError, Event, RequestPolicy,
    RequestState, RequestStatus, Span,
};

use support::{cleaner, jurisdiction, request_id, subject, time};

use generate::*;
use reading::*;

/// Cleaner names the generator picks from. The last one is never put in a plan, so results for
/// it exercise `UnknownCleaner`.
const NAMES: [&str; 4] = ["billing", "crm", "search", "never-planned"];
const PLANNABLE: usize = 3;

/// Every reason a reminder may not be sent.
const REASONS: [ReminderNotSentReason; 7] = [
    ReminderNotSentReason::GraceOver,
    ReminderNotSentReason::Cancelled,
    ReminderNotSentReason::Rejected,
    ReminderNotSentReason::OnHold,
    ReminderNotSentReason::NoNotifier,
    ReminderNotSentReason::SubjectUnreadable,
    ReminderNotSentReason::NotifierFailed,
];

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

fn handle(state: &RequestState, command: Command) -> Result<Vec<Event>, DomainError> {
    <DeletionRequest as Aggregate>::handle_command(state, command)
}

/// Commands that a timer or a cleaner may deliver twice: the repeat must emit nothing.
fn is_redelivered_by_design(command: &Command) -> bool {
    matches!(
        command,
        Command::RecordReminderSent { .. }
            | Command::RecordReminderNotSent { .. }
            | Command::MarkDue { .. }
            | Command::RecordCleanerSuccess { .. }
            | Command::RecordCleanerFailure { .. }
            | Command::Shred { .. }
    )
}

/// The stream as the store keeps it (type name and JSON text), read back and folded afresh.
fn replay_from_storage(events: &[Event]) -> Result<RequestState, String> {
    let mut stored = Vec::with_capacity(events.len());
    for event in events {
        let text = serde_json::to_string(&event.payload()).map_err(|e| e.to_string())?;
        let payload: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let read = Event::from_stored(event.event_type(), &payload)
            .map_err(|e| format!("{} {text}: {e}", event.event_type()))?;
        stored.push(read);
    }
    Ok(DeletionRequest::fold(stored))
}

/// The grace period a Receive or an Approve started: from receipt, or from the approval (a
/// request awaiting approval has no reminders yet).
fn check_start(step: &Step, events: &[Event], clock: DateTime<Utc>) -> Result<(), TestCaseError> {
    match (step, events) {
        (
            Step::Receive {
                grace_hours,
                reminder_hours,
                approval,
                ..
            },
            [Event::Received(received)],
        ) => {
            prop_assert_eq!(received.awaiting_approval, *approval);
            // Awaiting approval, the reminders wait for it.
            let offsets = if *approval { &[][..] } else { reminder_hours };
            prop_assert_eq!(received.received_at, clock);
            check_grace(
                received.due_at,
                &received.reminders,
                clock,
                *grace_hours,
                offsets,
            )?;
        }
        (
            Step::Approve {
                grace_hours,
                reminder_hours,
            },
            [Event::Approved(approved)],
        ) => {
            // The grace period counts from the approval.
            check_grace(
                approved.due_at,
                &approved.reminders,
                clock,
                *grace_hours,
                reminder_hours,
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// Due at the start + grace; one reminder per distinct offset, unless it falls at or before
/// the start (receipt, or approval).
fn check_grace(
    got_due_at: DateTime<Utc>,
    got_reminders: &[DateTime<Utc>],
    at: DateTime<Utc>,
    grace_hours: i64,
    reminder_hours: &[i64],
) -> Result<(), TestCaseError> {
    let due_at = at + TimeDelta::hours(grace_hours);
    prop_assert_eq!(got_due_at, due_at);
    let expected: BTreeSet<DateTime<Utc>> = reminder_hours
        .iter()
        .map(|hours| due_at - TimeDelta::hours(*hours))
        .filter(|reminder| *reminder > at)
        .collect();
    prop_assert_eq!(got_reminders.len(), expected.len());
    prop_assert_eq!(
        got_reminders.iter().copied().collect::<BTreeSet<_>>(),
        expected
    );
    Ok(())
}

fn run(start: DateTime<Utc>, steps: &[(i64, Step)]) -> Result<(), TestCaseError> {
    let mut clock = start;
    let mut state = RequestState::default();
    let mut stream: Vec<Event> = Vec::new();
    for (number, (pause, step)) in steps.iter().enumerate() {
        clock += TimeDelta::minutes(*pause);
        let command = command(step, clock);
        let result = handle(&state, command.clone());
        // Pure: the same command on the same state decides the same.
        prop_assert_eq!(&handle(&state, command.clone()), &result, "step {}", number);

        // A refused command applies nothing (handle_command only borrows the state, so the
        // state cannot change on Err); an accepted one is folded in.
        let Ok(events) = result else { continue };
        check_start(step, &events, clock)?;
        for event in events.iter().cloned() {
            stream.push(event.clone());
            state = <DeletionRequest as Aggregate>::apply_event(state, event);
        }

        let reading = StreamReading::read(&stream).map_err(|broken| {
            TestCaseError::fail(format!("step {number} {command:?}: {broken}"))
        })?;
        let request = state.request();
        prop_assert_eq!(
            request.map(Request::status),
            reading.received_on.map(|_| reading.status()),
            "step {}: the status disagrees with the stream",
            number
        );
        if let Some(request) = request {
            prop_assert_eq!(request.shredded, reading.shredded);
            prop_assert_eq!(Some(request.deadline), reading.deadline);
            let settled: BTreeSet<u32> = (0_u32..)
                .zip(&request.reminders)
                .filter(|(_, reminder)| reminder.is_resolved())
                .map(|(index, _)| index)
                .collect();
            prop_assert_eq!(
                &settled,
                &reading.settled,
                "step {}: reminder outcomes",
                number
            );
            if let Phase::Completed { cleaning, .. } = &request.phase {
                prop_assert!(
                    cleaning.all_done(),
                    "Completed with {:?}",
                    cleaning.cleaners
                );
            }
        }

        let replayed = replay_from_storage(&stream).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&replayed, &state, "step {}: replay differs", number);

        if !events.is_empty() && is_redelivered_by_design(&command) {
            let again = handle(&state, command.clone());
            prop_assert!(
                again.as_ref().map_or(true, Vec::is_empty),
                "step {}: {:?} delivered twice emitted {:?}",
                number,
                command,
                again
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_command_sequence_keeps_the_invariants_and_replays((start, steps) in scenario()) {
        run(start, &steps)?;
    }
}
