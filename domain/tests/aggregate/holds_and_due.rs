//! Holds, and a request falling due.

use super::*;

// --- Holds ---------------------------------------------------------------------------------------

#[test]
fn a_hold_shows_as_on_hold() {
    let state = given([received()])
        .when(place_hold(during_grace()))
        .then_expect_events(vec![hold_placed(during_grace())]);
    assert_eq!(request(&state).status(), RequestStatus::OnHold);
}

#[test]
fn a_hold_blocks_due() {
    given([received(), hold_placed(during_grace())])
        .when(mark_due(&[("billing", 3)]))
        .then_expect_error(DomainError::OnHold);
}

#[test]
fn a_hold_also_blocks_an_expedited_due() {
    given([received(), hold_placed(during_grace())])
        .when(Command::MarkDue {
            at: during_grace(),
            cleaners: plan(&[("billing", 3)]),
            expedite: true,
            reason: None,
        })
        .then_expect_error(DomainError::OnHold);
}

#[test]
fn after_release_due_works() {
    let state = given([
        received(),
        hold_placed(during_grace()),
        hold_released(during_grace() + TimeDelta::days(1)),
    ])
    .when(mark_due(&[("billing", 3)]))
    .then_expect_events(vec![due(&[("billing", 3)])]);
    assert_eq!(request(&state).status(), RequestStatus::Due);
}

#[test]
fn a_hold_needs_a_reason() {
    given([received()])
        .when(Command::PlaceHold {
            at: during_grace(),
            reason: " ".to_owned(),
        })
        .then_expect_error(DomainError::ReasonRequired);
}

#[test]
fn a_request_is_held_once_and_released_only_when_held() {
    given([received(), hold_placed(during_grace())])
        .when(place_hold(during_grace()))
        .then_expect_error(DomainError::AlreadyOnHold);
    given([received()])
        .when(Command::ReleaseHold {
            at: during_grace(),
            reason: None,
        })
        .then_expect_error(DomainError::NotOnHold);
}

// --- Due -------------------------------------------------------------------------------------------

#[test]
fn due_before_the_grace_period_ends_is_refused() {
    given([received()])
        .when(Command::MarkDue {
            at: due_at() - TimeDelta::seconds(1),
            cleaners: plan(&[("billing", 3)]),
            expedite: false,
            reason: None,
        })
        .then_expect_error(DomainError::NotYetDue);
}

#[test]
fn an_expedited_due_may_come_early() {
    let state = given([received()])
        .when(Command::MarkDue {
            at: during_grace(),
            cleaners: plan(&[("billing", 3)]),
            expedite: true,
            reason: None,
        })
        .then_expect_events(vec![Event::Due(Due {
            at: during_grace(),
            cleaners: plan(&[("billing", 3)]),
            expedited: true,
            reason: None,
        })]);
    let cleaning = request(&state).cleaning().expect("cleaning has started");
    assert!(cleaning.expedited);
    assert_eq!(cleaning.became_due_at, during_grace());
}

#[test]
fn due_plans_the_cleaners_as_pending() {
    let state = given([received()])
        .when(mark_due(&[("billing", 3), ("crm", 5)]))
        .then_expect_events(vec![due(&[("billing", 3), ("crm", 5)])]);
    let request = request(&state);
    assert_eq!(request.status(), RequestStatus::Due);
    let cleaning = request.cleaning().unwrap();
    assert_eq!(cleaning.cleaners.len(), 2);
    assert_eq!(cleaning.cleaners[&cleaner("crm")].max_attempts, 5);
    assert!(cleaning
        .cleaners
        .values()
        .all(|c| c.state == CleanerState::Pending && c.attempts == 0));
}

#[test]
fn a_second_due_changes_nothing() {
    given([received(), due(&[("billing", 3)])])
        .when(mark_due(&[("billing", 3)]))
        .then_expect_no_events();
}

#[test]
fn due_with_no_cleaners_completes_at_once() {
    let state = given([received()])
        .when(mark_due(&[]))
        .then_expect_events(vec![due(&[]), completed(due_at())]);
    assert_eq!(request(&state).status(), RequestStatus::Completed);
}
