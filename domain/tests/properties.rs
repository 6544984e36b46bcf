//! Property tests: random command sequences (every variant, a few cleaner names, attempts 0..5,
//! time moving forward, empty and real reasons, holds, releases and extensions) run through
//! `handle_command` and `apply_event` from nothing. After every step the emitted stream and the
//! state must keep the aggregate's invariants, a replay of the stream from its stored JSON form
//! must rebuild the same state, and no command may panic (proptest reports a panic as a failure).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use proptest::prelude::*;

use lethe_domain::command::Receive;
use lethe_domain::event::{PlannedCleaner, Received, ReminderNotSentReason};
use lethe_domain::state::{Phase, Request};
use lethe_domain::{
    Aggregate, Command, DeadlineRule, DeletionRequest, DomainError, Event, RequestPolicy,
    RequestState, RequestStatus, Span,
};

use support::{cleaner, jurisdiction, request_id, subject, time};

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
// Generating commands
// ---------------------------------------------------------------------------------------------

/// A command without its time; the time comes from a clock that only moves forward.
#[derive(Debug, Clone)]
enum Step {
    Receive {
        ccpa: bool,
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

fn reason() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        1 => Just("  ".to_owned()),
        4 => "[a-z]{1,8}( [a-z]{1,8})?",
    ]
}

fn receive_step() -> impl Strategy<Value = Step> {
    (
        any::<bool>(),
        0..=24_i64,
        prop::collection::vec(0..=30_i64, 0..3),
    )
        .prop_map(|(ccpa, grace_hours, reminder_hours)| Step::Receive {
            ccpa,
            grace_hours,
            reminder_hours,
        })
}

/// Mostly one to three cleaners (a name may repeat), sometimes none; 0 to 3 attempts each.
fn plan() -> impl Strategy<Value = Vec<(usize, u32)>> {
    prop_oneof![
        9 => prop::collection::vec((0..PLANNABLE, 0..4_u32), 1..4),
        1 => Just(vec![]),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let cleaner = prop_oneof![9 => 0..PLANNABLE, 1 => Just(PLANNABLE)];
    // Mostly the attempts that can be in flight; sometimes 0 or one never asked for.
    let attempt = prop_oneof![1 => Just(0_u32), 6 => 1..3_u32, 2 => 3..5_u32];
    prop_oneof![
        1 => receive_step(),
        3 => (0..3_u32, 0..4_u32).prop_map(|(index, calls)| Step::ReminderSent { index, calls }),
        3 => (0..3_u32, 0..REASONS.len(), 0..3_u32)
            .prop_map(|(index, reason, calls)| Step::ReminderNotSent { index, reason, calls }),
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
fn scenario() -> impl Strategy<Value = (DateTime<Utc>, Vec<(i64, Step)>)> {
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

fn command(step: &Step, at: DateTime<Utc>) -> Command {
    let name = |i: usize| cleaner(NAMES[i]);
    match step.clone() {
        Step::Receive {
            ccpa,
            grace_hours,
            reminder_hours,
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
            },
        }),
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
                })
                .collect(),
            expedite,
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
        },
        Step::Skip { cleaner, reason } => Command::SkipCleaner {
            cleaner: name(cleaner),
            at,
            reason,
        },
        Step::Shred => Command::Shred { at },
    }
}

// ---------------------------------------------------------------------------------------------
// An independent reading of the stream
// ---------------------------------------------------------------------------------------------

/// What a cleaner's events say, tracked from the stream alone.
#[derive(Debug, Default)]
struct CleanerHistory {
    max_attempts: u32,
    last_attempt: u32,
    exhausted: bool,
    done: bool,
    failed_attempts: BTreeSet<u32>,
}

/// What the stream says, checked event by event against the aggregate's invariants.
#[derive(Debug, Default)]
struct StreamReading {
    received_on: Option<NaiveDate>,
    due_at: Option<DateTime<Utc>>,
    reminder_count: usize,
    /// Reminders with an outcome (sent, or not sent and why).
    settled: BTreeSet<u32>,
    on_hold: bool,
    deadline: Option<NaiveDate>,
    deadline_rule: Option<DeadlineRule>,
    due: bool,
    cleaners: BTreeMap<String, CleanerHistory>,
    closed: Option<RequestStatus>,
    shredded: bool,
}

impl StreamReading {
    fn read(events: &[Event]) -> Result<Self, String> {
        let mut reading = Self::default();
        for (position, event) in events.iter().enumerate() {
            reading
                .apply(event)
                .map_err(|broken| format!("event {position} ({}): {broken}", event.event_type()))?;
        }
        // "Completed ... and then at once": no open request whose cleaners are all done.
        if reading.due && reading.closed.is_none() && reading.cleaners.values().all(|c| c.done) {
            return Err("every planned cleaner is done but the request is not Completed".into());
        }
        Ok(reading)
    }

    fn apply(&mut self, event: &Event) -> Result<(), String> {
        if let Event::Received(received) = event {
            if self.received_on.is_some() {
                return Err("a second Received".into());
            }
            for at in &received.reminders {
                if *at <= received.received_at || *at > received.due_at {
                    return Err(format!("reminder at {at} outside the grace period"));
                }
            }
            self.received_on = Some(received.received_at.date_naive());
            self.due_at = Some(received.due_at);
            self.reminder_count = received.reminders.len();
            self.deadline = Some(received.deadline);
            self.deadline_rule = Some(received.deadline_rule);
            return Ok(());
        }
        if self.received_on.is_none() {
            return Err("an event before Received".into());
        }
        // A reminder's outcome may come in any phase, closed and shredded included, once.
        match event {
            // A sent reminder counts at least the call the notifier accepted.
            Event::ReminderSent(sent) => return self.settle(sent.index, sent.calls == 0),
            Event::ReminderNotSent(not_sent) => return self.settle(not_sent.index, false),
            Event::Reminded(_) => return Err("Reminded is no longer written".into()),
            _ => {}
        }
        if let Some(status) = self.closed {
            return match event {
                Event::Shredded(_) if self.shredded => Err("shredded twice".into()),
                Event::Shredded(_) => {
                    self.shredded = true;
                    Ok(())
                }
                _ => Err(format!("an event after the request was {status}")),
            };
        }
        match event {
            Event::Received(_) => unreachable!("handled above"),
            Event::Shredded(_) => return Err("shredded while open".into()),
            Event::Reminded(_) | Event::ReminderSent(_) | Event::ReminderNotSent(_) => {
                unreachable!("handled above")
            }
            Event::Cancelled(_) | Event::Rejected(_) => {
                if self.due {
                    return Err("cancelled or rejected after Due".into());
                }
                self.closed = Some(if matches!(event, Event::Cancelled(_)) {
                    RequestStatus::Cancelled
                } else {
                    RequestStatus::Rejected
                });
            }
            Event::HoldPlaced(hold) => {
                if self.on_hold || hold.reason.trim().is_empty() {
                    return Err("a hold while held, or without a reason".into());
                }
                self.on_hold = true;
            }
            Event::HoldReleased(_) => {
                if !self.on_hold {
                    return Err("a release without a hold".into());
                }
                self.on_hold = false;
            }
            Event::DeadlineExtended(extended) => {
                let latest = self
                    .deadline_rule
                    .zip(self.received_on)
                    .map(|(rule, received)| rule.latest_deadline(received));
                if extended.by.is_zero() || extended.reason.trim().is_empty() {
                    return Err("an empty or unexplained extension".into());
                }
                if Some(extended.deadline) > latest || Some(extended.deadline) <= self.deadline {
                    return Err(format!(
                        "deadline moved from {:?} to {} (latest {latest:?})",
                        self.deadline, extended.deadline
                    ));
                }
                self.deadline = Some(extended.deadline);
            }
            Event::Due(due) => {
                if self.due {
                    return Err("a second Due".into());
                }
                if self.on_hold {
                    return Err("Due while on hold".into());
                }
                if !due.expedited && Some(due.at) < self.due_at {
                    return Err("Due before the grace period ended, not expedited".into());
                }
                self.due = true;
                for planned in &due.cleaners {
                    self.cleaners.insert(
                        planned.name.to_string(),
                        CleanerHistory {
                            max_attempts: planned.max_attempts,
                            ..CleanerHistory::default()
                        },
                    );
                }
            }
            Event::CleanerSucceeded(e) => {
                let c = self.planned(e.cleaner.as_str())?;
                if c.done {
                    return Err("a result for a cleaner that is done".into());
                }
                if e.attempt == 0 || e.attempt > c.last_attempt + 1 {
                    return Err(format!(
                        "success for attempt {} after {}",
                        e.attempt, c.last_attempt
                    ));
                }
                c.last_attempt = c.last_attempt.max(e.attempt);
                c.done = true;
                c.exhausted = false;
            }
            Event::CleanerFailed(e) => {
                let c = self.planned(e.cleaner.as_str())?;
                if c.done || c.exhausted {
                    return Err("a failure for a cleaner that is done or exhausted".into());
                }
                if e.attempt != c.last_attempt + 1 || !c.failed_attempts.insert(e.attempt) {
                    return Err(format!(
                        "failure of attempt {} after {}",
                        e.attempt, c.last_attempt
                    ));
                }
                let exhausted = !e.retryable || e.attempt >= c.max_attempts;
                if e.exhausted != exhausted {
                    return Err(format!("exhausted = {}, expected {exhausted}", e.exhausted));
                }
                c.last_attempt = e.attempt;
                c.exhausted = exhausted;
            }
            Event::CleanerRetried(e) => {
                let c = self.planned(e.cleaner.as_str())?;
                if !c.exhausted || e.max_attempts <= c.last_attempt {
                    return Err(
                        "a retry of a cleaner not exhausted, or with no attempt left".into(),
                    );
                }
                c.max_attempts = e.max_attempts;
                c.exhausted = false;
            }
            Event::CleanerSkipped(e) => {
                let c = self.planned(e.cleaner.as_str())?;
                if c.done || e.reason.trim().is_empty() {
                    return Err("a skip of a done cleaner, or without a reason".into());
                }
                c.done = true;
                c.exhausted = false;
            }
            Event::Completed(_) => {
                if !self.due || !self.cleaners.values().all(|c| c.done) {
                    return Err("Completed with a cleaner outstanding".into());
                }
                self.closed = Some(RequestStatus::Completed);
            }
        }
        Ok(())
    }

    fn settle(&mut self, index: u32, sent_without_a_call: bool) -> Result<(), String> {
        if index as usize >= self.reminder_count {
            return Err(format!("reminder {index} does not exist"));
        }
        if sent_without_a_call {
            return Err(format!("reminder {index} sent after no call"));
        }
        if !self.settled.insert(index) {
            return Err(format!("reminder {index} settled twice"));
        }
        Ok(())
    }

    fn planned(&mut self, name: &str) -> Result<&mut CleanerHistory, String> {
        if !self.due {
            return Err("a cleaner event before Due".into());
        }
        self.cleaners
            .get_mut(name)
            .ok_or_else(|| format!("cleaner {name} is not in the plan"))
    }

    /// The status docs/ARCHITECTURE.md gives a request with this history.
    fn status(&self) -> RequestStatus {
        match self.closed {
            Some(status) => status,
            None if self.on_hold => RequestStatus::OnHold,
            None if !self.due => RequestStatus::Pending,
            None if self.cleaners.values().any(|c| c.exhausted) => RequestStatus::NeedsAttention,
            None => RequestStatus::Due,
        }
    }
}

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

/// Due at receipt + grace; one reminder per distinct offset, unless it falls at or before receipt.
fn check_receipt(
    received: &Received,
    at: DateTime<Utc>,
    grace_hours: i64,
    reminder_hours: &[i64],
) -> Result<(), TestCaseError> {
    let due_at = at + TimeDelta::hours(grace_hours);
    prop_assert_eq!(received.received_at, at);
    prop_assert_eq!(received.due_at, due_at);
    let expected: BTreeSet<DateTime<Utc>> = reminder_hours
        .iter()
        .map(|hours| due_at - TimeDelta::hours(*hours))
        .filter(|reminder| *reminder > at)
        .collect();
    prop_assert_eq!(received.reminders.len(), expected.len());
    prop_assert_eq!(
        received.reminders.iter().copied().collect::<BTreeSet<_>>(),
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
        if let (
            Step::Receive {
                grace_hours,
                reminder_hours,
                ..
            },
            [Event::Received(received)],
        ) = (step, events.as_slice())
        {
            check_receipt(received, clock, *grace_hours, reminder_hours)?;
        }
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
