//! What the log records about a request. Events are facts in the past tense; each carries the
//! time it happened and everything a reader needs without consulting configuration (computed
//! due dates, the cleaner plan), so that replaying the log years later gives the same answer.
//!
//! Who did it (the actor), the command and correlation ids and the recording time are metadata
//! kept by the event store beside each event, not part of these payloads.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CleanerName, Jurisdiction, RequestId, StoreName};
use crate::policy::{DeadlineRule, Span};
use crate::subject::SubjectRecord;

/// The version of the payload schema written by this code, stored with every event.
pub const SCHEMA_VERSION: i32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    Received(Received),
    Approved(Approved),
    Reminded(Reminded),
    ReminderSent(ReminderSent),
    ReminderNotSent(ReminderNotSent),
    Cancelled(Cancelled),
    Rejected(Rejected),
    HoldPlaced(HoldPlaced),
    HoldReleased(HoldReleased),
    DeadlineExtended(DeadlineExtended),
    Due(Due),
    CleanerSucceeded(CleanerSucceeded),
    CleanerFailed(CleanerFailed),
    CleanerRetried(CleanerRetried),
    CleanerSkipped(CleanerSkipped),
    Completed(Completed),
    Shredded(Shredded),
    Suppressed(Suppressed),
    SuppressionLifted(SuppressionLifted),
    PreviouslyErased(PreviouslyErased),
}

/// Calls `$then!` with the name of every variant of [`Event`], in declaration order: the one
/// list that [`EVENT_TYPES`], [`Event::event_type`], [`Event::payload`] and
/// [`Event::from_stored`] are written from (a missing or extra name would not compile).
macro_rules! with_event_variants {
    ($then:ident) => {
        $then!(
            Received,
            Approved,
            Reminded,
            ReminderSent,
            ReminderNotSent,
            Cancelled,
            Rejected,
            HoldPlaced,
            HoldReleased,
            DeadlineExtended,
            Due,
            CleanerSucceeded,
            CleanerFailed,
            CleanerRetried,
            CleanerSkipped,
            Completed,
            Shredded,
            Suppressed,
            SuppressionLifted,
            PreviouslyErased
        )
    };
}

macro_rules! names {
    ($($variant:ident),*) => {
        [$(stringify!($variant)),*]
    };
}

/// Every event type's name, as stored in the log's `event_type` column.
pub const EVENT_TYPES: [&str; 20] = with_event_variants!(names);

impl Event {
    /// The event's type name, as stored in the log.
    pub const fn event_type(&self) -> &'static str {
        macro_rules! name {
            ($($variant:ident),*) => {
                match self {
                    $(Self::$variant(_) => stringify!($variant),)*
                }
            };
        }
        with_event_variants!(name)
    }

    /// The payload alone, as stored in the log's `payload` column.
    pub fn payload(&self) -> serde_json::Value {
        macro_rules! to_value {
            ($($variant:ident),*) => {
                match self {
                    $(Self::$variant(inner) => serde_json::to_value(inner),)*
                }
            };
        }
        // Every payload is a struct with string keys and plain fields: it always serializes.
        with_event_variants!(to_value)
            .unwrap_or_else(|error| unreachable!("an event payload did not serialize: {error}"))
    }

    /// Rebuilds an event from the log's `event_type` and `payload` columns. The payload is
    /// read in place (a rebuild decodes every event of the log through here).
    pub fn from_stored(event_type: &str, payload: &serde_json::Value) -> serde_json::Result<Self> {
        use serde::de::Error as _;
        macro_rules! from_value {
            ($($variant:ident),*) => {
                match event_type {
                    $(stringify!($variant) => Deserialize::deserialize(payload).map(Self::$variant),)*
                    other => Err(serde_json::Error::unknown_variant(other, &EVENT_TYPES)),
                }
            };
        }
        with_event_variants!(from_value)
    }

    /// When the fact happened (not when it was recorded).
    pub const fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::Received(e) => e.received_at,
            Self::Approved(e) => e.at,
            Self::Reminded(e) => e.at,
            Self::ReminderSent(e) => e.at,
            Self::ReminderNotSent(e) => e.at,
            Self::Cancelled(e) => e.at,
            Self::Rejected(e) => e.at,
            Self::HoldPlaced(e) => e.at,
            Self::HoldReleased(e) => e.at,
            Self::DeadlineExtended(e) => e.at,
            Self::Due(e) => e.at,
            Self::CleanerSucceeded(e) => e.at,
            Self::CleanerFailed(e) => e.at,
            Self::CleanerRetried(e) => e.at,
            Self::CleanerSkipped(e) => e.at,
            Self::Completed(e) => e.at,
            Self::Shredded(e) => e.at,
            Self::Suppressed(e) => e.at,
            Self::SuppressionLifted(e) => e.at,
            Self::PreviouslyErased(e) => e.at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    pub request_id: RequestId,
    pub subject: SubjectRecord,
    pub jurisdiction: Jurisdiction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub received_at: DateTime<Utc>,
    /// End of the grace period: the request becomes due then unless cancelled or held.
    pub due_at: DateTime<Utc>,
    /// When each reminder is to be sent, earliest first (index 0 is the earliest).
    pub reminders: Vec<DateTime<Utc>>,
    pub deadline_rule: DeadlineRule,
    /// The legal deadline (inclusive), counted from the day of receipt in UTC.
    pub deadline: NaiveDate,
    /// The policy requires an approval before the grace period starts: until [`Approved`],
    /// `due_at` is the earliest the grace period could end and there are no reminders.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_approval: bool,
}

/// An administrator approved a request that awaited approval: its grace period runs from
/// `at`, ending at `due_at`, with its reminders. The legal deadline does not move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approved {
    pub at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub reminders: Vec<DateTime<Utc>>,
    /// Why, as the administrator gave it (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Written only by versions before ADR 16, and kept readable with its meaning then: reminder
/// `index` fell due during the grace period and was handed to the notifier's job. Whether the
/// notifier accepted it is not in the log. Nothing writes it any more: a reminder now ends in
/// [`ReminderSent`] or [`ReminderNotSent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reminded {
    /// Which of the request's reminders this was (0-based).
    pub index: u32,
    pub at: DateTime<Utc>,
}

/// The notifier accepted reminder `index` (answered 2xx). Recorded only after that answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReminderSent {
    /// Which of the request's reminders this was (0-based).
    pub index: u32,
    /// When the notifier's acceptance was received.
    pub at: DateTime<Utc>,
    /// Calls made to the notifier for this reminder, the accepted one included.
    pub calls: u32,
}

/// Reminder `index` was not delivered and will not be: why, and what was tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReminderNotSent {
    /// Which of the request's reminders this was (0-based).
    pub index: u32,
    pub at: DateTime<Utc>,
    pub reason: ReminderNotSentReason,
    /// Calls made to the notifier for this reminder, none of them known to be accepted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calls: u32,
    /// The notifier's last failure, when it was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Why a reminder was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderNotSentReason {
    /// The grace period was over (the request had become due, or its due time had passed)
    /// before the notifier accepted the reminder.
    GraceOver,
    /// The request was cancelled during its grace period.
    Cancelled,
    /// The request was rejected during its grace period.
    Rejected,
    /// The request was on hold: erasure is postponed, so the reminder's date no longer holds.
    OnHold,
    /// No `[notifier]` is configured.
    NoNotifier,
    /// The subject's identifiers could not be read, so there was no one to address.
    SubjectUnreadable,
    /// The notifier did not accept it, and no further try fits before the grace period ends.
    NotifierFailed,
}

impl ReminderNotSentReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::GraceOver => "grace_over",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::OnHold => "on_hold",
            Self::NoNotifier => "no_notifier",
            Self::SubjectUnreadable => "subject_unreadable",
            Self::NotifierFailed => "notifier_failed",
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
const fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancelled {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldPlaced {
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldReleased {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadlineExtended {
    pub at: DateTime<Utc>,
    pub by: Span,
    pub reason: String,
    /// The new deadline after this extension.
    pub deadline: NaiveDate,
}

/// One cleaner selected by the routing rules when the request became due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedCleaner {
    pub name: CleanerName,
    /// Attempts allowed before the cleaner is exhausted and needs a person.
    pub max_attempts: u32,
    /// The declared stores (`[[stores]]`) that name this cleaner among those erasing them,
    /// fixed with the plan (ADR 30). Absent in events written before stores were declared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Due {
    pub at: DateTime<Utc>,
    /// The cleaners to be told, fixed now so that later config changes do not alter the plan.
    pub cleaners: Vec<PlannedCleaner>,
    /// True when an administrator made the request due before its grace period ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expedited: bool,
    /// Why an administrator expedited it (optional; never set by the timer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanerSucceeded {
    pub cleaner: CleanerName,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// What the cleaner reported deleted, e.g. `{"rows": 12}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanerFailed {
    pub cleaner: CleanerName,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub retryable: bool,
    /// The server's `Retry-After`, in seconds, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// No attempt is left (or the failure is not retryable): a person must retry or skip.
    pub exhausted: bool,
}

/// An administrator granted an exhausted cleaner another round of attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanerRetried {
    pub cleaner: CleanerName,
    pub at: DateTime<Utc>,
    /// The new total of attempts allowed, counting the ones already made.
    pub max_attempts: u32,
    /// Why, as the administrator gave it (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanerSkipped {
    pub cleaner: CleanerName,
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    pub at: DateTime<Utc>,
    /// The declared stores covered for this request (ADR 30): each store that at least one
    /// planned cleaner erases, with those cleaners by outcome. Left out when there is none, so
    /// events written before stores were declared read, and hash, as they were written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<CoveredStore>,
}

/// A declared store covered for a request: every cleaner of the request's plan that erases it
/// succeeded or was skipped (at `Completed` every planned cleaner has), named by outcome so
/// that a store covered only by a skip is visible as such.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoveredStore {
    pub store: StoreName,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub succeeded: Vec<CleanerName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<CleanerName>,
}

/// The request's personal-data key was destroyed: the subject can no longer be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shredded {
    pub at: DateTime<Utc>,
}

/// The completed request's subject kept for suppression (opt-in `[suppression]`): one keyed
/// hash per identifier (HMAC-SHA256 under the suppression key, never the identifier), which
/// outlives the shredding of the request's data key, so that an importing service can ask
/// whether a person it is about to bring back was erased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppressed {
    /// `FINGERPRINT:HMAC` of each identifier, the fingerprint naming the suppression key.
    pub hashes: Vec<String>,
    /// When the entries stop answering (none: never); evaluated when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// An administrator lifted the request's suppression entries: they answer no more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuppressionLifted {
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// At receipt, the subject matched the suppression entries of these earlier, erased requests:
/// the new request is accepted (a person may ask again) and flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviouslyErased {
    pub requests: Vec<RequestId>,
    pub at: DateTime<Utc>,
}
