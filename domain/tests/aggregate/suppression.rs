//! Suppression after erasure: kept only once the request is completed and only once; lifted
//! only while in force and with a reason; a new request flagged once.

use lethe_domain::event::{PreviouslyErased, Suppressed, SuppressionLifted};

use super::*;

fn completed_history() -> Vec<Event> {
    vec![
        received(),
        due(&[("billing", 3)]),
        succeeded("billing", 1, after_due(1)),
        completed(after_due(1)),
    ]
}

fn suppress() -> Command {
    Command::Suppress {
        hashes: vec!["f:01".to_owned()],
        expires_at: Some(after_due(100)),
        at: after_due(1),
    }
}

fn suppressed() -> Event {
    Event::Suppressed(Suppressed {
        hashes: vec!["f:01".to_owned()],
        expires_at: Some(after_due(100)),
        at: after_due(1),
    })
}

#[test]
fn a_completed_request_is_suppressed_once() {
    let state = given(completed_history())
        .when(suppress())
        .then_expect_events(vec![suppressed()]);
    let suppression = request(&state).suppression.clone().unwrap();
    assert!(suppression.in_force(after_due(99)));
    assert!(
        !suppression.in_force(after_due(100)),
        "expired at expires_at"
    );
    given(completed_history().into_iter().chain([suppressed()]))
        .when(suppress())
        .then_expect_error(DomainError::AlreadySuppressed);
}

#[test]
fn an_open_request_or_no_hash_is_not_suppressed() {
    given([received(), due(&[("billing", 3)])])
        .when(suppress())
        .then_expect_error(DomainError::NotCompleted);
    given(completed_history())
        .when(Command::Suppress {
            hashes: vec![],
            expires_at: None,
            at: after_due(1),
        })
        .then_expect_error(DomainError::NothingToSuppress);
}

#[test]
fn a_suppression_is_lifted_with_a_reason_and_once() {
    let history: Vec<Event> = completed_history()
        .into_iter()
        .chain([suppressed()])
        .collect();
    let lift = |reason: &str| Command::LiftSuppression {
        at: after_due(2),
        reason: reason.to_owned(),
    };
    given(history.clone())
        .when(lift("  "))
        .then_expect_error(DomainError::ReasonRequired);
    let lifted = Event::SuppressionLifted(SuppressionLifted {
        reason: "asked again".to_owned(),
        at: after_due(2),
    });
    let state = given(history.clone())
        .when(lift(" asked again "))
        .then_expect_events(vec![lifted.clone()]);
    assert!(!request(&state)
        .suppression
        .clone()
        .unwrap()
        .in_force(after_due(3)));
    given(history.into_iter().chain([lifted]))
        .when(lift("again"))
        .then_expect_error(DomainError::NotSuppressed);
    given(completed_history())
        .when(lift("nothing kept"))
        .then_expect_error(DomainError::NotSuppressed);
}

#[test]
fn a_new_request_is_flagged_once() {
    let earlier = vec![request_id()];
    let flag = || Command::FlagPreviouslyErased {
        requests: earlier.clone(),
        at: received_at(),
    };
    let flagged = Event::PreviouslyErased(PreviouslyErased {
        requests: earlier.clone(),
        at: received_at(),
    });
    let state = given([received()])
        .when(flag())
        .then_expect_events(vec![flagged.clone()]);
    assert_eq!(request(&state).previously_erased, earlier);
    given([received(), flagged])
        .when(flag())
        .then_expect_no_events();
}
