//! Optional approval: a request received under a policy that requires it awaits approval;
//! approval starts the grace period (and its reminders) from then; the legal deadline stays
//! counted from receipt.

use lethe_domain::event::Approved;

use super::*;

fn approval_policy() -> RequestPolicy {
    RequestPolicy {
        approval_required: true,
        ..gdpr_policy()
    }
}

/// The fixture request, received under a policy that requires approval.
fn received_awaiting() -> Event {
    let mut receive = receive_gdpr();
    receive.policy = approval_policy();
    let state = given_nothing()
        .when(Command::Receive(receive))
        .then_accepted();
    assert_eq!(request(&state).status(), RequestStatus::AwaitingApproval);
    let Event::Received(mut received) = received() else {
        unreachable!("the fixture is a Received")
    };
    received.reminders.clear();
    received.awaiting_approval = true;
    Event::Received(received)
}

#[test]
fn a_request_under_approval_awaits_it_without_reminders() {
    let mut receive = receive_gdpr();
    receive.policy = approval_policy();
    let state = given_nothing()
        .when(Command::Receive(receive))
        .then_expect_events(vec![received_awaiting()]);
    assert_eq!(request(&state).status(), RequestStatus::AwaitingApproval);
    assert!(request(&state).reminders.is_empty());
    assert_eq!(request(&state).deadline, date(2025, 4, 3));
}

#[test]
fn approval_starts_the_grace_period_and_keeps_the_deadline() {
    let approved_at = received_at() + TimeDelta::days(5);
    let state = given([received_awaiting()])
        .when(Command::Approve {
            at: approved_at,
            policy: approval_policy(),
            reason: None,
        })
        .then_expect_events(vec![Event::Approved(Approved {
            at: approved_at,
            due_at: approved_at + TimeDelta::days(GRACE_DAYS),
            reminders: vec![
                approved_at + TimeDelta::days(GRACE_DAYS - 7),
                approved_at + TimeDelta::days(GRACE_DAYS - 1),
            ],
            reason: None,
        })]);
    let request = request(&state);
    assert_eq!(request.status(), RequestStatus::Pending);
    assert_eq!(request.due_at, approved_at + TimeDelta::days(GRACE_DAYS));
    assert_eq!(request.reminders.len(), 2);
    // The legal deadline still counts from receipt.
    assert_eq!(request.deadline, date(2025, 4, 3));
}

#[test]
fn nothing_falls_due_before_approval_not_even_expedited() {
    for expedite in [false, true] {
        given([received_awaiting()])
            .when(Command::MarkDue {
                at: due_at() + TimeDelta::days(1),
                cleaners: plan(&[("billing", 3)]),
                expedite,
                reason: None,
            })
            .then_expect_error(DomainError::AwaitingApproval);
    }
}

fn approve(days: i64) -> Command {
    Command::Approve {
        at: received_at() + TimeDelta::days(days),
        policy: approval_policy(),
        reason: None,
    }
}

#[test]
fn only_a_request_awaiting_approval_is_approved() {
    given([received()])
        .when(approve(1))
        .then_expect_error(DomainError::NotAwaitingApproval);
    let approved = given([received_awaiting()])
        .when(approve(1))
        .result()
        .unwrap();
    given([received_awaiting()].into_iter().chain(approved))
        .when(approve(2))
        .then_expect_error(DomainError::NotAwaitingApproval);
}

#[test]
fn a_request_awaiting_approval_may_be_rejected_or_cancelled_not_approved_after() {
    let at = received_at() + TimeDelta::days(1);
    for (closing, status) in [
        (
            Event::Rejected(Rejected {
                at,
                reason: "not a customer".to_owned(),
            }),
            RequestStatus::Rejected,
        ),
        (
            Event::Cancelled(Cancelled { at, reason: None }),
            RequestStatus::Cancelled,
        ),
    ] {
        given([received_awaiting()])
            .when(match &closing {
                Event::Rejected(r) => Command::Reject {
                    at,
                    reason: r.reason.clone(),
                },
                _ => Command::Cancel { at, reason: None },
            })
            .then_expect_events(vec![closing.clone()]);
        given([received_awaiting(), closing])
            .when(approve(2))
            .then_expect_error(DomainError::Closed { status });
    }
}
