//! Generating commands: random steps, and the command each step makes.

use super::*;

/// A command without its time; the time comes from a clock that only moves forward.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Receive {
        ccpa: bool,
        grace_hours: i64,
        reminder_hours: Vec<i64>,
        approval: bool,
    },
    Approve {
        grace_hours: i64,
        reminder_hours: Vec<i64>,
    },
    ReminderSent {
        index: u32,
        calls: u32,
    },
    ReminderNotSent {
        index: u32,
        reason: usize,
        calls: u32,
    },
    Cancel {
        reason: Option<String>,
    },
    Reject {
        reason: String,
    },
    PlaceHold {
        reason: String,
    },
    ReleaseHold {
        reason: Option<String>,
    },
    Extend {
        by: Span,
        reason: String,
    },
    MarkDue {
        plan: Vec<(usize, u32)>,
        expedite: bool,
    },
    Success {
        cleaner: usize,
        attempt: u32,
        deleted: Option<u64>,
    },
    Failure {
        cleaner: usize,
        attempt: u32,
        retryable: bool,
        status_code: Option<u16>,
        retry_after_seconds: Option<u64>,
    },
    Retry {
        cleaner: usize,
        extra_attempts: u32,
    },
    Skip {
        cleaner: usize,
        reason: String,
    },
    Shred,
}

pub(crate) fn reason() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        1 => Just("  ".to_owned()),
        4 => "[a-z]{1,8}( [a-z]{1,8})?",
    ]
}

pub(crate) fn receive_step() -> impl Strategy<Value = Step> {
    (
        any::<bool>(),
        0..=24_i64,
        prop::collection::vec(0..=30_i64, 0..3),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(ccpa, grace_hours, reminder_hours, approval)| Step::Receive {
                ccpa,
                grace_hours,
                reminder_hours,
                approval,
            },
        )
}

/// Mostly one to three cleaners (a name may repeat), sometimes none; 0 to 3 attempts each.
pub(crate) fn plan() -> impl Strategy<Value = Vec<(usize, u32)>> {
    prop_oneof![
        9 => prop::collection::vec((0..PLANNABLE, 0..4_u32), 1..4),
        1 => Just(vec![]),
    ]
}

pub(crate) fn step() -> impl Strategy<Value = Step> {
    let cleaner = prop_oneof![9 => 0..PLANNABLE, 1 => Just(PLANNABLE)];
    // Mostly the attempts that can be in flight; sometimes 0 or one never asked for.
    let attempt = prop_oneof![1 => Just(0_u32), 6 => 1..3_u32, 2 => 3..5_u32];
    prop_oneof![
        1 => receive_step(),
        3 => (0..3_u32, 0..4_u32).prop_map(|(index, calls)| Step::ReminderSent { index, calls }),
        3 => (0..3_u32, 0..REASONS.len(), 0..3_u32)
            .prop_map(|(index, reason, calls)| Step::ReminderNotSent { index, reason, calls }),
        3 => (0..=24_i64, prop::collection::vec(0..=30_i64, 0..3))
            .prop_map(|(grace_hours, reminder_hours)| Step::Approve { grace_hours, reminder_hours }),
        1 => prop::option::of(reason()).prop_map(|reason| Step::Cancel { reason }),
        1 => reason().prop_map(|reason| Step::Reject { reason }),
        2 => reason().prop_map(|reason| Step::PlaceHold { reason }),
        3 => prop::option::of(reason()).prop_map(|reason| Step::ReleaseHold { reason }),
        3 => (0..3_u32, 0..70_u32, reason())
            .prop_map(|(months, days, reason)| Step::Extend { by: Span { months, days }, reason }),
        10 => (plan(), any::<bool>())
            .prop_map(|(plan, expedite)| Step::MarkDue { plan, expedite }),
        12 => (cleaner.clone(), attempt.clone(), prop::option::of(0..100_u64))
            .prop_map(|(cleaner, attempt, deleted)| Step::Success { cleaner, attempt, deleted }),
        14 => (
            cleaner.clone(),
            attempt,
            any::<bool>(),
            prop::option::of(prop_oneof![Just(429_u16), Just(503), Just(404)]),
            prop::option::of(0..3600_u64),
        )
            .prop_map(|(cleaner, attempt, retryable, status_code, retry_after_seconds)| {
                Step::Failure { cleaner, attempt, retryable, status_code, retry_after_seconds }
            }),
        6 => (cleaner.clone(), prop_oneof![0..3_u32, Just(u32::MAX)])
            .prop_map(|(cleaner, extra_attempts)| Step::Retry { cleaner, extra_attempts }),
        4 => (cleaner, reason()).prop_map(|(cleaner, reason)| Step::Skip { cleaner, reason }),
        1 => Just(Step::Shred),
    ]
}

/// A start time, a first Receive most of the time, then steps each after a pause in minutes.
pub(crate) fn scenario() -> impl Strategy<Value = (DateTime<Utc>, Vec<(i64, Step)>)> {
    let start = (0..800_i64, 0..24 * 60_i64).prop_map(|(days, minutes)| {
        time(2023, 12, 1, 0, 0) + TimeDelta::minutes(days * 24 * 60 + minutes)
    });
    let pause = prop_oneof![Just(0_i64), 1..60_i64, 60..24 * 60_i64];
    (
        start,
        prop::bool::weighted(0.9),
        receive_step(),
        prop::collection::vec((pause, step()), 0..50),
    )
        .prop_map(|(start, starts_with_receive, receive, mut steps)| {
            if starts_with_receive {
                steps.insert(0, (0, receive));
            }
            (start, steps)
        })
}

// Longer than 100 lines: one match arm per step, each a command built from its fields.
pub(crate) fn command(step: &Step, at: DateTime<Utc>) -> Command {
    let name = |i: usize| cleaner(NAMES[i]);
    match step.clone() {
        Step::Receive {
            ccpa,
            grace_hours,
            reminder_hours,
            approval,
        } => Command::Receive(Receive {
            request_id: request_id(),
            subject: subject().into(),
            jurisdiction: jurisdiction(if ccpa { "ccpa" } else { "gdpr" }),
            source: None,
            reason: None,
            external_id: None,
            tags: vec![],
            received_at: at,
            policy: RequestPolicy {
                grace_period: TimeDelta::hours(grace_hours),
                reminders: reminder_hours.into_iter().map(TimeDelta::hours).collect(),
                deadline: if ccpa {
                    DeadlineRule::CCPA
                } else {
                    DeadlineRule::GDPR
                },
                approval_required: approval,
            },
        }),
        Step::Approve {
            grace_hours,
            reminder_hours,
        } => Command::Approve {
            at,
            policy: RequestPolicy {
                grace_period: TimeDelta::hours(grace_hours),
                reminders: reminder_hours.into_iter().map(TimeDelta::hours).collect(),
                deadline: DeadlineRule::GDPR,
                approval_required: true,
            },
            reason: None,
        },
        Step::ReminderSent { index, calls } => Command::RecordReminderSent { index, at, calls },
        Step::ReminderNotSent {
            index,
            reason,
            calls,
        } => Command::RecordReminderNotSent {
            index,
            at,
            reason: REASONS[reason],
            calls,
            last_error: (calls > 0).then(|| "HTTP 503".to_owned()),
        },
        Step::Cancel { reason } => Command::Cancel { at, reason },
        Step::Reject { reason } => Command::Reject { at, reason },
        Step::PlaceHold { reason } => Command::PlaceHold { at, reason },
        Step::ReleaseHold { reason } => Command::ReleaseHold { at, reason },
        Step::Extend { by, reason } => Command::ExtendDeadline { at, by, reason },
        Step::MarkDue { plan, expedite } => Command::MarkDue {
            at,
            cleaners: plan
                .into_iter()
                .map(|(i, max_attempts)| PlannedCleaner {
                    name: name(i),
                    max_attempts,
                    stores: stores_of(i),
                })
                .collect(),
            expedite,
            reason: None,
        },
        Step::Success {
            cleaner,
            attempt,
            deleted,
        } => Command::RecordCleanerSuccess {
            cleaner: name(cleaner),
            attempt,
            at,
            deleted: deleted.map(|rows| BTreeMap::from([("rows".to_owned(), rows)])),
            detail: None,
        },
        Step::Failure {
            cleaner,
            attempt,
            retryable,
            status_code,
            retry_after_seconds,
        } => Command::RecordCleanerFailure {
            cleaner: name(cleaner),
            attempt,
            at,
            error: "boom".to_owned(),
            status_code,
            retryable,
            retry_after_seconds,
        },
        Step::Retry {
            cleaner,
            extra_attempts,
        } => Command::RetryCleaner {
            cleaner: name(cleaner),
            at,
            extra_attempts,
            reason: None,
        },
        Step::Skip { cleaner, reason } => Command::SkipCleaner {
            cleaner: name(cleaner),
            at,
            reason,
        },
        Step::Shred => Command::Shred { at },
    }
}

/// The declared stores cleaner `i` erases: two cleaners share `shared`, one erases none.
pub(crate) fn stores_of(i: usize) -> Vec<lethe_domain::StoreName> {
    let names: &[&str] = match i % NAMES.len() {
        0 => &["orders", "shared"],
        1 => &["shared"],
        2 => &[],
        _ => &["unplanned"],
    };
    names
        .iter()
        .map(|n| lethe_domain::StoreName::parse(*n).unwrap())
        .collect()
}
