//! The `requests` projection agrees with the aggregate: for random command sequences run
//! through `DeletionRequest`, folding the emitted events with `requests::apply` gives the same
//! status, deadline and cleaner states as the aggregate's own state.

use std::collections::BTreeMap;

use chrono::{TimeDelta, TimeZone, Utc};
use lethe_domain::command::Receive;
use lethe_domain::event::PlannedCleaner;
use lethe_domain::{
    Aggregate, CleanerName, Command, DeadlineRule, DeletionRequest, Jurisdiction, RequestId,
    RequestPolicy, RequestState, Span, Subject,
};
use lethe_projections::requests::{apply, RequestRow};
use proptest::prelude::*;

const CLEANERS: [&str; 3] = ["billing", "crm", "search"];

#[derive(Debug, Clone)]
enum Op {
    Remind(u32, bool),
    Cancel,
    Reject(bool),
    Hold(bool),
    Release,
    Extend(u32),
    MarkDue(bool),
    Success(usize, u32),
    Failure(usize, u32, bool),
    Retry(usize),
    Skip(usize, bool),
    Shred,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0_u32..3, any::<bool>()).prop_map(|(index, sent)| Op::Remind(index, sent)),
        Just(Op::Cancel),
        any::<bool>().prop_map(Op::Reject),
        any::<bool>().prop_map(Op::Hold),
        Just(Op::Release),
        (0_u32..40).prop_map(Op::Extend),
        any::<bool>().prop_map(Op::MarkDue),
        (0_usize..3, 0_u32..5).prop_map(|(c, a)| Op::Success(c, a)),
        (0_usize..3, 0_u32..5, any::<bool>()).prop_map(|(c, a, r)| Op::Failure(c, a, r)),
        (0_usize..3).prop_map(Op::Retry),
        (0_usize..3, any::<bool>()).prop_map(|(c, r)| Op::Skip(c, r)),
        Just(Op::Shred),
    ]
}

fn reason(present: bool) -> String {
    if present {
        "because".to_owned()
    } else {
        String::new()
    }
}

fn command(op: &Op, at: chrono::DateTime<Utc>) -> Command {
    let cleaner = |i: usize| CleanerName::parse(CLEANERS[i]).unwrap();
    match op.clone() {
        Op::Remind(index, true) => Command::RecordReminderSent {
            index,
            at,
            calls: 1,
        },
        Op::Remind(index, false) => Command::RecordReminderNotSent {
            index,
            at,
            reason: lethe_domain::event::ReminderNotSentReason::GraceOver,
            calls: 0,
            last_error: None,
        },
        Op::Cancel => Command::Cancel { at, reason: None },
        Op::Reject(r) => Command::Reject {
            at,
            reason: reason(r),
        },
        Op::Hold(r) => Command::PlaceHold {
            at,
            reason: reason(r),
        },
        Op::Release => Command::ReleaseHold { at, reason: None },
        Op::Extend(days) => Command::ExtendDeadline {
            at,
            by: Span::days(days),
            reason: "complex".to_owned(),
        },
        Op::MarkDue(expedite) => Command::MarkDue {
            at,
            cleaners: CLEANERS
                .iter()
                .map(|n| PlannedCleaner {
                    name: CleanerName::parse(*n).unwrap(),
                    max_attempts: 2,
                    stores: Vec::new(),
                })
                .collect(),
            expedite,
            reason: None,
        },
        Op::Success(c, attempt) => Command::RecordCleanerSuccess {
            cleaner: cleaner(c),
            attempt,
            at,
            deleted: None,
            detail: None,
        },
        Op::Failure(c, attempt, retryable) => Command::RecordCleanerFailure {
            cleaner: cleaner(c),
            attempt,
            at,
            error: "HTTP 503".to_owned(),
            status_code: Some(503),
            retryable,
            retry_after_seconds: None,
        },
        Op::Retry(c) => Command::RetryCleaner {
            cleaner: cleaner(c),
            at,
            extra_attempts: 2,
            reason: None,
        },
        Op::Skip(c, r) => Command::SkipCleaner {
            cleaner: cleaner(c),
            at,
            reason: reason(r),
        },
        Op::Shred => Command::Shred { at },
    }
}

proptest! {
    #[test]
    fn the_projection_agrees_with_the_aggregate(ops in prop::collection::vec(op(), 0..40)) {
        let start = Utc.with_ymd_and_hms(2025, 1, 31, 9, 0, 0).unwrap();
        let receive = Command::Receive(Receive {
            request_id: RequestId::from_uuid(uuid::Uuid::from_bytes([7; 16])),
            subject: Subject::parse(BTreeMap::from([("user_id".to_owned(), "1".to_owned())])).unwrap().into(),
            jurisdiction: Jurisdiction::parse("gdpr").unwrap(),
            source: Some("app".to_owned()),
            reason: None,
            external_id: None,
            tags: vec!["t".to_owned()],
            received_at: start,
            policy: RequestPolicy {
                grace_period: TimeDelta::days(30),
                reminders: vec![TimeDelta::days(7), TimeDelta::days(1)],
                deadline: DeadlineRule::GDPR,
                approval_required: false,
            },
        });
        let mut state = RequestState::NotReceived;
        let mut row: Option<RequestRow> = None;
        let commands = std::iter::once(receive).chain(
            ops.iter().enumerate().map(|(i, op)| command(op, start + TimeDelta::days(31) + TimeDelta::hours(i64::try_from(i).unwrap()))),
        );
        for command in commands {
            let Ok(events) = DeletionRequest::handle_command(&state, command) else { continue };
            for event in events {
                row = apply(row, &event);
                state = DeletionRequest::apply_event(state, event);
            }
            let request = state.request().unwrap();
            let row = row.as_ref().unwrap();
            prop_assert_eq!(row.status, request.status());
            prop_assert_eq!(row.deadline, request.deadline);
            prop_assert_eq!(row.on_hold, request.hold.is_some());
            prop_assert_eq!(row.shredded, request.shredded);
            let expected: Vec<(String, String, u32)> = request
                .cleaning()
                .map(|c| {
                    c.cleaners
                        .iter()
                        .map(|(n, p)| (n.to_string(), p.state.as_str().to_owned(), p.attempts))
                        .collect()
                })
                .unwrap_or_default();
            let mut actual: Vec<(String, String, u32)> = row
                .cleaners
                .iter()
                .map(|c| (c.name.clone(), c.status.clone(), c.attempts))
                .collect();
            actual.sort();
            prop_assert_eq!(actual, expected);
        }
    }
}
