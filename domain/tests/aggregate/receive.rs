//! Receipt, cancelling and rejecting, closed requests and shredding.

use super::*;

// --- Receive ---------------------------------------------------------------------------------

#[test]
fn receive_records_due_date_reminders_and_legal_deadline() {
    let state = given_nothing()
        .when(Command::Receive(receive_gdpr()))
        .then_expect_events(vec![received()]);
    assert_eq!(request(&state).status(), RequestStatus::Pending);
}

#[test]
fn reminders_that_would_fall_before_receipt_are_dropped() {
    let mut receive = receive_gdpr();
    receive.policy = RequestPolicy {
        grace_period: TimeDelta::days(GRACE_DAYS),
        // 40 days before the end of a 30-day grace period is 10 days before receipt.
        reminders: vec![TimeDelta::days(7), TimeDelta::days(40), TimeDelta::days(1)],
        deadline: DeadlineRule::GDPR,
        approval_required: false,
    };
    given_nothing()
        .when(Command::Receive(receive))
        .then_expect_events(vec![received()]);
}

#[test]
fn the_deadline_follows_the_jurisdictions_rule() {
    let mut receive = receive_gdpr();
    receive.jurisdiction = jurisdiction("ccpa");
    receive.policy.deadline = DeadlineRule::CCPA;
    let state = given_nothing()
        .when(Command::Receive(receive))
        .then_accepted();
    // 3 March + 45 days.
    assert_eq!(request(&state).deadline, date(2025, 4, 17));
    assert_eq!(request(&state).deadline_rule, DeadlineRule::CCPA);
}

#[test]
fn the_deadline_counts_from_the_utc_day_of_receipt() {
    let mut receive = receive_gdpr();
    receive.received_at = time(2025, 1, 31, 23, 30);
    let state = given_nothing()
        .when(Command::Receive(receive))
        .then_accepted();
    assert_eq!(request(&state).deadline, date(2025, 2, 28));
    assert_eq!(request(&state).due_at, time(2025, 3, 2, 23, 30));
}

#[test]
fn a_request_is_received_only_once() {
    given([received()])
        .when(Command::Receive(receive_gdpr()))
        .then_expect_error(DomainError::AlreadyReceived);
}

#[test]
fn nothing_but_receive_is_accepted_before_receipt() {
    for command in [
        Command::Cancel {
            at: received_at(),
            reason: None,
        },
        mark_due(&[]),
        Command::Shred { at: received_at() },
        success("billing", 1, received_at()),
    ] {
        given_nothing()
            .when(command)
            .then_expect_error(DomainError::NotReceived);
    }
}

// --- Cancel and reject -------------------------------------------------------------------------

#[test]
fn cancel_during_the_grace_period_closes_the_request() {
    let state = given([received()])
        .when(Command::Cancel {
            at: during_grace(),
            reason: Some("changed my mind".to_owned()),
        })
        .then_expect_events(vec![Event::Cancelled(Cancelled {
            at: during_grace(),
            reason: Some("changed my mind".to_owned()),
        })]);
    assert_eq!(request(&state).status(), RequestStatus::Cancelled);
}

#[test]
fn cancel_after_due_is_refused() {
    given([received(), due(&[("billing", 3)])])
        .when(Command::Cancel {
            at: after_due(1),
            reason: None,
        })
        .then_expect_error(DomainError::CancelAfterDue);
}

#[test]
fn reject_before_due_closes_the_request() {
    let state = given([received()])
        .when(Command::Reject {
            at: during_grace(),
            reason: "identity not verified".to_owned(),
        })
        .then_expect_events(vec![Event::Rejected(Rejected {
            at: during_grace(),
            reason: "identity not verified".to_owned(),
        })]);
    assert_eq!(request(&state).status(), RequestStatus::Rejected);
}

#[test]
fn reject_needs_a_reason() {
    for reason in ["", "   "] {
        given([received()])
            .when(Command::Reject {
                at: during_grace(),
                reason: reason.to_owned(),
            })
            .then_expect_error(DomainError::ReasonRequired);
    }
}

#[test]
fn reject_after_due_is_refused() {
    given([received(), due(&[("billing", 3)])])
        .when(Command::Reject {
            at: after_due(1),
            reason: "identity not verified".to_owned(),
        })
        .then_expect_error(DomainError::RejectAfterDue);
}

// --- Closed requests and shredding --------------------------------------------------------------

#[test]
fn a_closed_request_accepts_no_command_but_shred() {
    let at = after_due(2);
    let commands = || {
        vec![
            Command::Cancel { at, reason: None },
            Command::Reject {
                at,
                reason: "late".to_owned(),
            },
            place_hold(at),
            Command::ReleaseHold { at, reason: None },
            Command::ExtendDeadline {
                at,
                by: Span::days(1),
                reason: "complex".to_owned(),
            },
            mark_due(&[("billing", 3)]),
            // `crm` was never planned, so this cannot be a late duplicate.
            success("crm", 1, at),
            failure("crm", 1, at, true),
            Command::RetryCleaner {
                cleaner: cleaner("billing"),
                at,
                extra_attempts: 1,
                reason: None,
            },
            Command::SkipCleaner {
                cleaner: cleaner("billing"),
                at,
                reason: "gone".to_owned(),
            },
        ]
    };
    for (status, history) in closed_histories() {
        assert_eq!(request(&given(history.clone()).state()).status(), status);
        for command in commands() {
            let label = format!("{command:?} on a {status} request");
            let result = given(history.clone()).when(command).result();
            assert_eq!(result, Err(DomainError::Closed { status }), "{label}");
        }
    }
}

#[test]
fn a_closed_request_is_shredded_once() {
    let at = after_due(24 * 90);
    for (status, history) in closed_histories() {
        let state = given(history.clone())
            .when(Command::Shred { at })
            .then_expect_events(vec![Event::Shredded(Shredded { at })]);
        assert!(request(&state).shredded, "{status}");
        assert_eq!(
            request(&state).status(),
            status,
            "shredding keeps the status"
        );

        let mut shredded = history;
        shredded.push(Event::Shredded(Shredded { at }));
        given(shredded)
            .when(Command::Shred {
                at: at + TimeDelta::days(1),
            })
            .then_expect_no_events();
    }
}

#[test]
fn an_open_request_cannot_be_shredded() {
    given([received()])
        .when(Command::Shred { at: during_grace() })
        .then_expect_error(DomainError::NotClosed);
    given([received(), due(&[("billing", 3)])])
        .when(Command::Shred { at: after_due(1) })
        .then_expect_error(DomainError::NotClosed);
}
