//! Cleaner results: successes, failures, retries and skips.

use super::*;

// --- Cleaner results ---------------------------------------------------------------------------

#[test]
fn a_success_that_is_not_the_last_only_records_it() {
    let state = given([received(), due(&[("billing", 3), ("crm", 3)])])
        .when(success("billing", 1, after_due(1)))
        .then_expect_events(vec![succeeded("billing", 1, after_due(1))]);
    assert_eq!(request(&state).status(), RequestStatus::Due);
}

#[test]
fn the_last_outstanding_success_completes_the_request() {
    let state = given([
        received(),
        due(&[("billing", 3), ("crm", 3)]),
        succeeded("billing", 1, after_due(1)),
    ])
    .when(success("crm", 1, after_due(2)))
    .then_expect_events(vec![
        succeeded("crm", 1, after_due(2)),
        completed(after_due(2)),
    ]);
    assert_eq!(request(&state).status(), RequestStatus::Completed);
}

#[test]
fn a_duplicate_success_changes_nothing() {
    given([
        received(),
        due(&[("billing", 3), ("crm", 3)]),
        succeeded("billing", 1, after_due(1)),
    ])
    .when(success("billing", 1, after_due(3)))
    .then_expect_no_events();
}

#[test]
fn a_duplicate_failure_changes_nothing() {
    given([
        received(),
        due(&[("billing", 3)]),
        failed("billing", 1, after_due(1), true, false),
    ])
    .when(failure("billing", 1, after_due(2), true))
    .then_expect_no_events();
}

#[test]
fn a_retryable_failure_below_the_maximum_is_not_exhausted() {
    let state = given([received(), due(&[("billing", 3)])])
        .when(failure("billing", 1, after_due(1), true))
        .then_expect_events(vec![failed("billing", 1, after_due(1), true, false)]);
    let request = request(&state);
    assert_eq!(request.status(), RequestStatus::Due);
    let progress = &request.cleaning().unwrap().cleaners[&cleaner("billing")];
    assert_eq!(progress.attempts, 1);
    assert_eq!(progress.next_attempt(), 2);
    assert_eq!(progress.last_error.as_deref(), Some("HTTP 503"));
}

#[test]
fn a_failure_of_the_last_attempt_exhausts_the_cleaner() {
    let state = given([
        received(),
        due(&[("billing", 2)]),
        failed("billing", 1, after_due(1), true, false),
    ])
    .when(failure("billing", 2, after_due(2), true))
    .then_expect_events(vec![failed("billing", 2, after_due(2), true, true)]);
    assert_eq!(request(&state).status(), RequestStatus::NeedsAttention);
}

#[test]
fn a_non_retryable_failure_exhausts_the_cleaner_at_once() {
    let state = given([received(), due(&[("billing", 8)])])
        .when(failure("billing", 1, after_due(1), false))
        .then_expect_events(vec![failed("billing", 1, after_due(1), false, true)]);
    let request = request(&state);
    assert_eq!(request.status(), RequestStatus::NeedsAttention);
    assert_eq!(
        request.cleaning().unwrap().cleaners[&cleaner("billing")].state,
        CleanerState::Exhausted
    );
}

#[test]
fn a_cleaner_is_retried_only_when_exhausted() {
    given([received(), due(&[("billing", 3)])])
        .when(Command::RetryCleaner {
            cleaner: cleaner("billing"),
            at: after_due(1),
            extra_attempts: 2,
            reason: None,
        })
        .then_expect_error(DomainError::CleanerNotExhausted {
            cleaner: cleaner("billing"),
        });
}

#[test]
fn a_retried_cleaner_gets_more_attempts_and_a_success_then_completes() {
    let history = [
        received(),
        due(&[("billing", 1)]),
        failed("billing", 1, after_due(1), true, true),
    ];
    let state = given(history.clone())
        .when(Command::RetryCleaner {
            cleaner: cleaner("billing"),
            at: after_due(5),
            extra_attempts: 2,
            reason: None,
        })
        .then_expect_events(vec![Event::CleanerRetried(CleanerRetried {
            cleaner: cleaner("billing"),
            at: after_due(5),
            max_attempts: 3,
            reason: None,
        })]);
    assert_eq!(request(&state).status(), RequestStatus::Due);

    let mut retried = history.to_vec();
    retried.push(Event::CleanerRetried(CleanerRetried {
        cleaner: cleaner("billing"),
        at: after_due(5),
        max_attempts: 3,
        reason: None,
    }));
    let state = given(retried)
        .when(success("billing", 2, after_due(6)))
        .then_expect_events(vec![
            succeeded("billing", 2, after_due(6)),
            completed(after_due(6)),
        ]);
    assert_eq!(request(&state).status(), RequestStatus::Completed);
}

#[test]
fn a_retry_with_no_extra_attempts_still_grants_one() {
    given([
        received(),
        due(&[("billing", 1)]),
        failed("billing", 1, after_due(1), true, true),
    ])
    .when(Command::RetryCleaner {
        cleaner: cleaner("billing"),
        at: after_due(5),
        extra_attempts: 0,
        reason: None,
    })
    .then_expect_events(vec![Event::CleanerRetried(CleanerRetried {
        cleaner: cleaner("billing"),
        at: after_due(5),
        max_attempts: 2,
        reason: None,
    })]);
}

#[test]
fn a_retry_with_a_huge_number_of_attempts_does_not_overflow() {
    let state = given([
        received(),
        due(&[("billing", 1)]),
        failed("billing", 1, after_due(1), true, true),
    ])
    .when(Command::RetryCleaner {
        cleaner: cleaner("billing"),
        at: after_due(5),
        extra_attempts: u32::MAX,
        reason: None,
    })
    .then_expect_events(vec![Event::CleanerRetried(CleanerRetried {
        cleaner: cleaner("billing"),
        at: after_due(5),
        max_attempts: u32::MAX,
        reason: None,
    })]);
    assert_eq!(request(&state).status(), RequestStatus::Due);
}

#[test]
fn skipping_the_last_outstanding_cleaner_completes_the_request() {
    let state = given([
        received(),
        due(&[("billing", 3), ("crm", 3)]),
        succeeded("billing", 1, after_due(1)),
        failed("crm", 1, after_due(1), false, true),
    ])
    .when(Command::SkipCleaner {
        cleaner: cleaner("crm"),
        at: after_due(4),
        reason: "account never synced to the CRM".to_owned(),
    })
    .then_expect_events(vec![
        skipped("crm", after_due(4), "account never synced to the CRM"),
        completed(after_due(4)),
    ]);
    assert_eq!(request(&state).status(), RequestStatus::Completed);
}

#[test]
fn skipping_a_cleaner_that_is_not_the_last_only_records_it() {
    let state = given([received(), due(&[("billing", 3), ("crm", 3)])])
        .when(Command::SkipCleaner {
            cleaner: cleaner("crm"),
            at: after_due(4),
            reason: "decommissioned".to_owned(),
        })
        .then_expect_events(vec![skipped("crm", after_due(4), "decommissioned")]);
    assert_eq!(request(&state).status(), RequestStatus::Due);
}

#[test]
fn a_skip_needs_a_reason() {
    given([received(), due(&[("billing", 3)])])
        .when(Command::SkipCleaner {
            cleaner: cleaner("billing"),
            at: after_due(4),
            reason: "\t ".to_owned(),
        })
        .then_expect_error(DomainError::ReasonRequired);
}

#[test]
fn a_cleaner_that_is_done_cannot_be_skipped() {
    given([
        received(),
        due(&[("billing", 3), ("crm", 3)]),
        succeeded("billing", 1, after_due(1)),
    ])
    .when(Command::SkipCleaner {
        cleaner: cleaner("billing"),
        at: after_due(4),
        reason: "decommissioned".to_owned(),
    })
    .then_expect_error(DomainError::CleanerAlreadyDone {
        cleaner: cleaner("billing"),
    });
}

#[test]
fn a_cleaner_outside_the_plan_is_unknown() {
    let history = [received(), due(&[("billing", 3)])];
    let at = after_due(1);
    for command in [
        success("crm", 1, at),
        failure("crm", 1, at, true),
        Command::RetryCleaner {
            cleaner: cleaner("crm"),
            at,
            extra_attempts: 1,
            reason: None,
        },
        Command::SkipCleaner {
            cleaner: cleaner("crm"),
            at,
            reason: "gone".to_owned(),
        },
    ] {
        given(history.clone())
            .when(command)
            .then_expect_error(DomainError::UnknownCleaner {
                cleaner: cleaner("crm"),
            });
    }
}

#[test]
fn a_cleaner_result_before_due_is_refused() {
    for command in [
        success("billing", 1, during_grace()),
        failure("billing", 1, during_grace(), true),
    ] {
        given([received()])
            .when(command)
            .then_expect_error(DomainError::NotDue);
    }
}

#[test]
fn a_result_for_an_attempt_never_made_is_refused() {
    let history = [
        received(),
        due(&[("billing", 5)]),
        failed("billing", 1, after_due(1), true, false),
    ];
    // Attempt 2 is the one in flight; 3 was never asked for, and attempts count from 1.
    for attempt in [0, 3] {
        let expected = DomainError::UnknownAttempt {
            cleaner: cleaner("billing"),
            attempt,
            next: 2,
        };
        given(history.clone())
            .when(success("billing", attempt, after_due(2)))
            .then_expect_error(expected.clone());
        given(history.clone())
            .when(failure("billing", attempt, after_due(2), true))
            .then_expect_error(expected);
    }
}

#[test]
fn a_late_duplicate_result_after_completion_is_ignored() {
    let history = [
        received(),
        due(&[("billing", 3)]),
        succeeded("billing", 1, after_due(1)),
        completed(after_due(1)),
    ];
    given(history.clone())
        .when(success("billing", 1, after_due(3)))
        .then_expect_no_events();
    given(history)
        .when(failure("billing", 1, after_due(3), true))
        .then_expect_no_events();
}
#[test]
fn an_exhausted_cleaner_accepts_late_successes_only_for_attempts_it_was_sent() {
    let history = [
        received(),
        due(&[("billing", 2)]),
        failed("billing", 1, after_due(1), true, false),
        failed("billing", 2, after_due(2), true, true),
    ];
    given(history.clone())
        .when(success("billing", 3, after_due(3)))
        .then_expect_error(DomainError::UnknownAttempt {
            cleaner: cleaner("billing"),
            attempt: 3,
            next: 3,
        });
    given(history)
        .when(success("billing", 2, after_due(3)))
        .then_expect_events(vec![
            succeeded("billing", 2, after_due(3)),
            completed(after_due(3)),
        ]);
}
