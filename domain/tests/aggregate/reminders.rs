//! Reminders: sent, not sent, recorded late, unknown, legacy and moot.

use super::*;

// --- Reminders ---------------------------------------------------------------------------------

fn sent(index: u32, at: chrono::DateTime<chrono::Utc>, calls: u32) -> Command {
    Command::RecordReminderSent { index, at, calls }
}

fn not_sent(
    index: u32,
    at: chrono::DateTime<chrono::Utc>,
    reason: ReminderNotSentReason,
) -> Command {
    Command::RecordReminderNotSent {
        index,
        at,
        reason,
        calls: 0,
        last_error: None,
    }
}

#[test]
fn a_sent_reminder_is_recorded_once_with_its_calls() {
    let at = time(2025, 3, 26, 9, 0);
    let state = given([received()])
        .when(sent(0, at, 3))
        .then_expect_events(vec![Event::ReminderSent(ReminderSent {
            index: 0,
            at,
            calls: 3,
        })]);
    let reminders = &request(&state).reminders;
    assert_eq!(reminders[0].outcome, ReminderOutcome::Sent { at });
    assert_eq!(reminders[1].outcome, ReminderOutcome::Pending);
    assert!(reminders[0].is_resolved() && !reminders[1].is_resolved());

    // The notifier deduplicates a second call; the log does too.
    let history = [
        received(),
        Event::ReminderSent(ReminderSent {
            index: 0,
            at,
            calls: 3,
        }),
    ];
    given(history.clone())
        .when(sent(0, at + TimeDelta::minutes(1), 4))
        .then_expect_no_events();
    given(history)
        .when(not_sent(0, at, ReminderNotSentReason::GraceOver))
        .then_expect_no_events();
}

#[test]
fn a_sent_reminder_counts_at_least_the_accepted_call() {
    let at = time(2025, 3, 26, 9, 0);
    given([received()])
        .when(sent(1, at, 0))
        .then_expect_events(vec![Event::ReminderSent(ReminderSent {
            index: 1,
            at,
            calls: 1,
        })]);
}

#[test]
fn a_reminder_not_sent_keeps_its_reason_calls_and_last_error() {
    let at = time(2025, 3, 26, 9, 0);
    let state = given([received()])
        .when(Command::RecordReminderNotSent {
            index: 1,
            at,
            reason: ReminderNotSentReason::NotifierFailed,
            calls: 7,
            last_error: Some("HTTP 503 Service Unavailable".to_owned()),
        })
        .then_expect_events(vec![Event::ReminderNotSent(ReminderNotSent {
            index: 1,
            at,
            reason: ReminderNotSentReason::NotifierFailed,
            calls: 7,
            last_error: Some("HTTP 503 Service Unavailable".to_owned()),
        })]);
    assert_eq!(
        request(&state).reminders[1].outcome,
        ReminderOutcome::NotSent {
            at,
            reason: ReminderNotSentReason::NotifierFailed
        }
    );
    // Once given up, a late acceptance is not recorded over it.
    given([
        received(),
        Event::ReminderNotSent(ReminderNotSent {
            index: 1,
            at,
            reason: ReminderNotSentReason::NoNotifier,
            calls: 0,
            last_error: None,
        }),
    ])
    .when(sent(1, at, 1))
    .then_expect_no_events();
}

#[test]
fn a_reminder_outcome_is_recorded_after_the_request_closed() {
    let at = after_due(1);
    // Accepted by the notifier while the request was being cancelled: the log says so.
    given([
        received(),
        Event::Cancelled(Cancelled {
            at: during_grace(),
            reason: None,
        }),
    ])
    .when(sent(0, at, 1))
    .then_expect_events(vec![Event::ReminderSent(ReminderSent {
        index: 0,
        at,
        calls: 1,
    })]);
    for (status, history) in closed_histories() {
        let result = given(history)
            .when(not_sent(1, at, ReminderNotSentReason::GraceOver))
            .result();
        assert_eq!(
            result.map(|events| events.len()),
            Ok(1),
            "a not-sent reminder on a {status} request"
        );
    }
    // Even once the subject is shredded.
    given([
        received(),
        Event::Cancelled(Cancelled {
            at: during_grace(),
            reason: None,
        }),
        Event::Shredded(Shredded { at }),
    ])
    .when(not_sent(1, at, ReminderNotSentReason::Cancelled))
    .then_expect_events(vec![Event::ReminderNotSent(ReminderNotSent {
        index: 1,
        at,
        reason: ReminderNotSentReason::Cancelled,
        calls: 0,
        last_error: None,
    })]);
}

#[test]
fn a_reminder_that_does_not_exist_is_refused() {
    for command in [
        sent(2, during_grace(), 1),
        not_sent(2, during_grace(), ReminderNotSentReason::GraceOver),
    ] {
        given([received()])
            .when(command)
            .then_expect_error(DomainError::UnknownReminder { index: 2, count: 2 });
    }
}

#[test]
fn a_legacy_reminded_event_keeps_its_meaning_and_can_still_be_settled() {
    let at = time(2025, 3, 26, 9, 0);
    let legacy = [received(), Event::Reminded(Reminded { index: 0, at })];
    let state = given(legacy.clone()).state();
    // Handed to the notifier's job, delivery not recorded: neither sent nor given up.
    assert_eq!(
        request(&state).reminders[0].outcome,
        ReminderOutcome::Reminded { at }
    );
    assert!(!request(&state).reminders[0].is_resolved());
    let later = at + TimeDelta::minutes(2);
    let state = given(legacy)
        .when(sent(0, later, 1))
        .then_expect_events(vec![Event::ReminderSent(ReminderSent {
            index: 0,
            at: later,
            calls: 1,
        })]);
    assert_eq!(
        request(&state).reminders[0].outcome,
        ReminderOutcome::Sent { at: later }
    );
}

#[test]
fn a_reminder_is_moot_once_the_grace_period_is_over_or_the_request_is_held_or_closed() {
    let at = time(2025, 3, 26, 9, 0);
    let moot = |history: Vec<Event>, at| request(&given(history).state()).reminder_moot(at);
    assert_eq!(moot(vec![received()], at), None);
    assert_eq!(
        moot(vec![received()], due_at()),
        Some(ReminderNotSentReason::GraceOver),
        "its due time has passed, even before Due is recorded"
    );
    assert_eq!(
        moot(vec![received(), hold_placed(during_grace())], at),
        Some(ReminderNotSentReason::OnHold)
    );
    assert_eq!(
        moot(vec![received(), due(&[("billing", 3)])], at),
        Some(ReminderNotSentReason::GraceOver),
        "expedited"
    );
    assert_eq!(
        moot(
            vec![received(), Event::Cancelled(Cancelled { at, reason: None })],
            at
        ),
        Some(ReminderNotSentReason::Cancelled)
    );
    assert_eq!(
        moot(
            vec![
                received(),
                Event::Rejected(Rejected {
                    at,
                    reason: "no identity".to_owned()
                })
            ],
            at
        ),
        Some(ReminderNotSentReason::Rejected)
    );
}
