//! Shared test helpers: a given/when/then harness for the aggregate and builders for the
//! fixtures most tests start from (a GDPR request received at a fixed time, its Due, cleaner
//! results). Time is always an explicit, fixed `DateTime<Utc>`; nothing reads the clock.

// Each test file is its own crate and uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use uuid::Uuid;

use lethe_domain::command::Receive;
use lethe_domain::event::{
    CleanerFailed, CleanerSkipped, CleanerSucceeded, Completed, Due, HoldPlaced, HoldReleased,
    PlannedCleaner, Received,
};
use lethe_domain::state::Request;
use lethe_domain::{
    Aggregate, CleanerName, Command, DeadlineRule, DeletionRequest, DomainError, Event,
    Jurisdiction, RequestId, RequestPolicy, RequestState, Subject,
};

// ---------------------------------------------------------------------------------------------
// Given / when / then
// ---------------------------------------------------------------------------------------------

/// A history to run one command against.
#[derive(Debug)]
pub struct Given {
    state: RequestState,
}

/// The result of one command on a history, waiting to be checked.
#[derive(Debug)]
pub struct When {
    state: RequestState,
    result: Result<Vec<Event>, DomainError>,
}

/// A request whose stream holds `events`, folded with the aggregate's own `apply_event`.
pub fn given(events: impl IntoIterator<Item = Event>) -> Given {
    Given {
        state: DeletionRequest::fold(events),
    }
}

/// A request that has not been received: an empty stream.
pub fn given_nothing() -> Given {
    given([])
}

impl Given {
    /// The folded history itself, for checks on a state without a command.
    pub fn state(self) -> RequestState {
        self.state
    }

    pub fn when(self, command: Command) -> When {
        let result = <DeletionRequest as Aggregate>::handle_command(&self.state, command);
        When {
            state: self.state,
            result,
        }
    }
}

impl When {
    /// Checks the emitted events and returns the state after applying them, for status checks.
    #[track_caller]
    pub fn then_expect_events(self, expected: Vec<Event>) -> RequestState {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "the command emitted other events");
                events.into_iter().fold(self.state, |state, event| {
                    <DeletionRequest as Aggregate>::apply_event(state, event)
                })
            }
            Err(error) => panic!("expected events {expected:#?}, the command failed: {error:?}"),
        }
    }

    /// The command was accepted and changed nothing (an idempotent repeat).
    #[track_caller]
    pub fn then_expect_no_events(self) -> RequestState {
        self.then_expect_events(vec![])
    }

    /// The command was accepted; returns the state after its events, for checks on a few fields.
    #[track_caller]
    pub fn then_accepted(self) -> RequestState {
        match self.result {
            Ok(events) => events.into_iter().fold(self.state, |state, event| {
                <DeletionRequest as Aggregate>::apply_event(state, event)
            }),
            Err(error) => panic!("the command failed: {error:?}"),
        }
    }

    /// The raw result, for tables that check many commands.
    pub fn result(self) -> Result<Vec<Event>, DomainError> {
        self.result
    }

    #[track_caller]
    pub fn then_expect_error(self, expected: DomainError) {
        match self.result {
            Err(error) => assert_eq!(error, expected, "the command failed another way"),
            Ok(events) => panic!("expected {expected:?}, the command emitted {events:#?}"),
        }
    }
}

/// The request inside a state, which the caller expects to have been received.
#[track_caller]
pub fn request(state: &RequestState) -> &Request {
    state.request().expect("the request has been received")
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

#[track_caller]
pub fn time(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .expect("a valid UTC time")
}

#[track_caller]
pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

/// When the fixture request is received: 3 March 2025, 09:00 UTC.
pub fn received_at() -> DateTime<Utc> {
    time(2025, 3, 3, 9, 0)
}

/// The fixture's grace period.
pub const GRACE_DAYS: i64 = 30;

/// The end of the fixture's grace period: received_at + 30 days = 2 April 2025, 09:00 UTC.
pub fn due_at() -> DateTime<Utc> {
    time(2025, 4, 2, 9, 0)
}

/// During the grace period.
pub fn during_grace() -> DateTime<Utc> {
    time(2025, 3, 10, 12, 0)
}

/// `hours` after the fixture became due.
pub fn after_due(hours: i64) -> DateTime<Utc> {
    due_at() + TimeDelta::hours(hours)
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

pub fn request_id() -> RequestId {
    RequestId::from_uuid(Uuid::from_u128(0x0197_0000_0000_7000_8000_0000_0000_0001))
}

pub fn subject() -> Subject {
    Subject::parse(BTreeMap::from([
        ("email".to_owned(), "ada@example.com".to_owned()),
        ("user_id".to_owned(), "42".to_owned()),
    ]))
    .unwrap()
}

#[track_caller]
pub fn cleaner(name: &str) -> CleanerName {
    CleanerName::parse(name).unwrap()
}

#[track_caller]
pub fn jurisdiction(name: &str) -> Jurisdiction {
    Jurisdiction::parse(name).unwrap()
}

/// A 30-day grace period with reminders 7 days and 1 day before it ends, under GDPR.
pub fn gdpr_policy() -> RequestPolicy {
    RequestPolicy {
        grace_period: TimeDelta::days(GRACE_DAYS),
        reminders: vec![TimeDelta::days(7), TimeDelta::days(1)],
        deadline: DeadlineRule::GDPR,
        approval_required: false,
    }
}

/// The fixture request, received at [`received_at`] under [`gdpr_policy`].
pub fn receive_gdpr() -> Receive {
    Receive {
        request_id: request_id(),
        subject: subject().into(),
        jurisdiction: jurisdiction("gdpr"),
        source: Some("portal".to_owned()),
        reason: None,
        external_id: None,
        tags: vec![],
        received_at: received_at(),
        policy: gdpr_policy(),
    }
}

/// The `Received` event of the fixture, written out by hand from the policy: due 30 days after
/// receipt, reminders 7 days and 1 day before that, deadline one calendar month after 3 March.
pub fn received() -> Event {
    Event::Received(Received {
        request_id: request_id(),
        subject: subject().into(),
        jurisdiction: jurisdiction("gdpr"),
        source: Some("portal".to_owned()),
        reason: None,
        external_id: None,
        tags: vec![],
        received_at: received_at(),
        due_at: due_at(),
        reminders: vec![time(2025, 3, 26, 9, 0), time(2025, 4, 1, 9, 0)],
        deadline_rule: DeadlineRule::GDPR,
        deadline: date(2025, 4, 3),
        awaiting_approval: false,
    })
}

#[track_caller]
pub fn plan(cleaners: &[(&str, u32)]) -> Vec<PlannedCleaner> {
    cleaners
        .iter()
        .map(|(name, max_attempts)| PlannedCleaner {
            name: cleaner(name),
            max_attempts: *max_attempts,
            stores: Vec::new(),
        })
        .collect()
}

/// The grace-period timer firing on time, with the given `(cleaner, max_attempts)` plan.
pub fn mark_due(cleaners: &[(&str, u32)]) -> Command {
    Command::MarkDue {
        at: due_at(),
        cleaners: plan(cleaners),
        expedite: false,
        reason: None,
    }
}

/// The event [`mark_due`] records.
pub fn due(cleaners: &[(&str, u32)]) -> Event {
    Event::Due(Due {
        at: due_at(),
        cleaners: plan(cleaners),
        expedited: false,
        reason: None,
    })
}

pub fn place_hold(at: DateTime<Utc>) -> Command {
    Command::PlaceHold {
        at,
        reason: "litigation hold".to_owned(),
    }
}

pub fn hold_placed(at: DateTime<Utc>) -> Event {
    Event::HoldPlaced(HoldPlaced {
        at,
        reason: "litigation hold".to_owned(),
    })
}

pub fn hold_released(at: DateTime<Utc>) -> Event {
    Event::HoldReleased(HoldReleased { at, reason: None })
}

pub fn success(name: &str, attempt: u32, at: DateTime<Utc>) -> Command {
    Command::RecordCleanerSuccess {
        cleaner: cleaner(name),
        attempt,
        at,
        deleted: None,
        detail: None,
    }
}

pub fn succeeded(name: &str, attempt: u32, at: DateTime<Utc>) -> Event {
    Event::CleanerSucceeded(CleanerSucceeded {
        cleaner: cleaner(name),
        attempt,
        at,
        deleted: None,
        detail: None,
    })
}

pub fn failure(name: &str, attempt: u32, at: DateTime<Utc>, retryable: bool) -> Command {
    Command::RecordCleanerFailure {
        cleaner: cleaner(name),
        attempt,
        at,
        error: "HTTP 503".to_owned(),
        status_code: Some(503),
        retryable,
        retry_after_seconds: None,
    }
}

pub fn failed(
    name: &str,
    attempt: u32,
    at: DateTime<Utc>,
    retryable: bool,
    exhausted: bool,
) -> Event {
    Event::CleanerFailed(CleanerFailed {
        cleaner: cleaner(name),
        attempt,
        at,
        error: "HTTP 503".to_owned(),
        status_code: Some(503),
        retryable,
        retry_after_seconds: None,
        exhausted,
    })
}

pub fn skipped(name: &str, at: DateTime<Utc>, reason: &str) -> Event {
    Event::CleanerSkipped(CleanerSkipped {
        cleaner: cleaner(name),
        at,
        reason: reason.to_owned(),
    })
}

pub fn completed(at: DateTime<Utc>) -> Event {
    Event::Completed(Completed {
        at,
        stores: Vec::new(),
    })
}
