//! What may be asked of a request. Commands carry the time and the policy that apply, looked up
//! by the engine beforehand, so that the aggregate stays a pure function.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::event::{PlannedCleaner, ReminderNotSentReason};
use crate::ids::{CleanerName, Jurisdiction, RequestId};
use crate::policy::{RequestPolicy, Span};
use crate::subject::SubjectRecord;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Receive(Receive),
    /// The notifier accepted reminder `index` at `at`, after `calls` calls (the accepted one
    /// included). Only the notifier's answer may prompt it.
    RecordReminderSent {
        index: u32,
        at: DateTime<Utc>,
        calls: u32,
    },
    /// Reminder `index` will not be sent: why, after how many unaccepted calls, the last error.
    RecordReminderNotSent {
        index: u32,
        at: DateTime<Utc>,
        reason: ReminderNotSentReason,
        calls: u32,
        last_error: Option<String>,
    },
    /// Starts the grace period of a request that awaits approval, at `at`, by `policy`
    /// (its grace period and reminders; the legal deadline stays counted from receipt).
    Approve {
        at: DateTime<Utc>,
        policy: RequestPolicy,
        reason: Option<String>,
    },
    Cancel {
        at: DateTime<Utc>,
        reason: Option<String>,
    },
    Reject {
        at: DateTime<Utc>,
        reason: String,
    },
    PlaceHold {
        at: DateTime<Utc>,
        reason: String,
    },
    ReleaseHold {
        at: DateTime<Utc>,
        reason: Option<String>,
    },
    ExtendDeadline {
        at: DateTime<Utc>,
        by: Span,
        reason: String,
    },
    /// End of the grace period (from its timer), or earlier when `expedite` is set (an
    /// administrator's decision, with an optional `reason`).
    MarkDue {
        at: DateTime<Utc>,
        cleaners: Vec<PlannedCleaner>,
        expedite: bool,
        reason: Option<String>,
    },
    RecordCleanerSuccess {
        cleaner: CleanerName,
        attempt: u32,
        at: DateTime<Utc>,
        deleted: Option<BTreeMap<String, u64>>,
        detail: Option<String>,
    },
    RecordCleanerFailure {
        cleaner: CleanerName,
        attempt: u32,
        at: DateTime<Utc>,
        error: String,
        status_code: Option<u16>,
        retryable: bool,
        retry_after_seconds: Option<u64>,
    },
    /// Give an exhausted cleaner `extra_attempts` more attempts.
    RetryCleaner {
        cleaner: CleanerName,
        at: DateTime<Utc>,
        extra_attempts: u32,
        reason: Option<String>,
    },
    SkipCleaner {
        cleaner: CleanerName,
        at: DateTime<Utc>,
        reason: String,
    },
    Shred {
        at: DateTime<Utc>,
    },
    /// Keep the completed request's subject as these keyed hashes, until `expires_at`.
    Suppress {
        hashes: Vec<String>,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// Lift the request's suppression entries (an administrator's decision, with a reason).
    LiftSuppression {
        at: DateTime<Utc>,
        reason: String,
    },
    /// The new request's subject matched the suppression entries of these requests.
    FlagPreviouslyErased {
        requests: Vec<RequestId>,
        at: DateTime<Utc>,
    },
}

/// A new request, validated, with the policy in force when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Receive {
    pub request_id: RequestId,
    pub subject: SubjectRecord,
    pub jurisdiction: Jurisdiction,
    pub source: Option<String>,
    pub reason: Option<String>,
    pub external_id: Option<String>,
    pub tags: Vec<String>,
    pub received_at: DateTime<Utc>,
    pub policy: RequestPolicy,
}
