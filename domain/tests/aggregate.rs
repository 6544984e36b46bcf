//! The `DeletionRequest` aggregate, one behaviour per test, in given/when/then form: receipt
//! (due date, reminders, deadline), every invariant the aggregate enforces, and the status a
//! folded history shows.

mod support;

use chrono::TimeDelta;
use lethe_domain::event::{
    Cancelled, CleanerRetried, DeadlineExtended, Due, Rejected, Reminded, ReminderNotSent,
    ReminderNotSentReason, ReminderSent, Shredded,
};
use lethe_domain::state::ReminderOutcome;
use lethe_domain::{
    CleanerState, Command, DeadlineRule, DomainError, Event, RequestPolicy, RequestStatus, Span,
};

use support::*;

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

fn closed_histories() -> Vec<(RequestStatus, Vec<Event>)> {
    vec![
        (
            RequestStatus::Completed,
            vec![
                received(),
                due(&[("billing", 3)]),
                succeeded("billing", 1, after_due(1)),
                completed(after_due(1)),
            ],
        ),
        (
            RequestStatus::Cancelled,
            vec![
                received(),
                Event::Cancelled(Cancelled {
                    at: during_grace(),
                    reason: None,
                }),
            ],
        ),
        (
            RequestStatus::Rejected,
            vec![
                received(),
                Event::Rejected(Rejected {
                    at: during_grace(),
                    reason: "duplicate".to_owned(),
                }),
            ],
        ),
    ]
}

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
        })
        .then_expect_events(vec![Event::Due(Due {
            at: during_grace(),
            cleaners: plan(&[("billing", 3)]),
            expedited: true,
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
        })
        .then_expect_events(vec![Event::CleanerRetried(CleanerRetried {
            cleaner: cleaner("billing"),
            at: after_due(5),
            max_attempts: 3,
        })]);
    assert_eq!(request(&state).status(), RequestStatus::Due);

    let mut retried = history.to_vec();
    retried.push(Event::CleanerRetried(CleanerRetried {
        cleaner: cleaner("billing"),
        at: after_due(5),
        max_attempts: 3,
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
    })
    .then_expect_events(vec![Event::CleanerRetried(CleanerRetried {
        cleaner: cleaner("billing"),
        at: after_due(5),
        max_attempts: 2,
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
    })
    .then_expect_events(vec![Event::CleanerRetried(CleanerRetried {
        cleaner: cleaner("billing"),
        at: after_due(5),
        max_attempts: u32::MAX,
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

// --- Deadline extensions -------------------------------------------------------------------------

fn extend(by: Span) -> Command {
    Command::ExtendDeadline {
        at: during_grace(),
        by,
        reason: "many systems to search".to_owned(),
    }
}

fn extended(by: Span, deadline: chrono::NaiveDate) -> Event {
    Event::DeadlineExtended(DeadlineExtended {
        at: during_grace(),
        by,
        reason: "many systems to search".to_owned(),
        deadline,
    })
}

#[test]
fn an_extension_within_the_maximum_moves_the_deadline() {
    // Received 3 March: one month gives 3 April, one more month 3 May.
    let state = given([received()])
        .when(extend(Span::months(1)))
        .then_expect_events(vec![extended(Span::months(1), date(2025, 5, 3))]);
    let request = request(&state);
    assert_eq!(request.deadline, date(2025, 5, 3));
    assert_eq!(request.extension, Span::months(1));
}

#[test]
fn extensions_add_up_to_the_maximum() {
    given([received(), extended(Span::months(1), date(2025, 5, 3))])
        .when(extend(Span::months(1)))
        .then_expect_events(vec![extended(Span::months(1), date(2025, 6, 3))]);
}

#[test]
fn an_extension_beyond_the_maximum_is_refused() {
    given([received()])
        .when(extend(Span { months: 2, days: 1 }))
        .then_expect_error(DomainError::ExtensionExceedsMaximum {
            requested: date(2025, 6, 4),
            maximum: date(2025, 6, 3),
        });
    given([received(), extended(Span::months(2), date(2025, 6, 3))])
        .when(extend(Span::days(1)))
        .then_expect_error(DomainError::ExtensionExceedsMaximum {
            requested: date(2025, 6, 4),
            maximum: date(2025, 6, 3),
        });
}

#[test]
fn an_empty_extension_is_refused() {
    given([received()])
        .when(extend(Span::default()))
        .then_expect_error(DomainError::EmptyExtension);
}

#[test]
fn an_extension_needs_a_reason() {
    given([received()])
        .when(Command::ExtendDeadline {
            at: during_grace(),
            by: Span::months(1),
            reason: String::new(),
        })
        .then_expect_error(DomainError::ReasonRequired);
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
