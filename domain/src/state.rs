//! The state of a request: the left fold of its events. It is what commands are checked
//! against and what `show` prints.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{CoveredStore, ReminderNotSentReason};
use crate::ids::{CleanerName, Jurisdiction, RequestId, StoreName};
use crate::policy::{DeadlineRule, Span};
use crate::subject::SubjectRecord;

/// The status users see, derived from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    AwaitingApproval,
    Pending,
    OnHold,
    Due,
    NeedsAttention,
    Completed,
    Cancelled,
    Rejected,
}

impl RequestStatus {
    pub const ALL: [Self; 8] = [
        Self::AwaitingApproval,
        Self::Pending,
        Self::OnHold,
        Self::Due,
        Self::NeedsAttention,
        Self::Completed,
        Self::Cancelled,
        Self::Rejected,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "awaiting_approval",
            Self::Pending => "pending",
            Self::OnHold => "on_hold",
            Self::Due => "due",
            Self::NeedsAttention => "needs_attention",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }

    /// Closed requests accept no further command but shredding.
    pub const fn is_closed(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Rejected)
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RequestStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("{s:?} is not a status; use one of {}", names.join(", "))
            })
    }
}

/// The aggregate's state: nothing before `Received`, then the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", content = "request", rename_all = "snake_case")]
pub enum RequestState {
    #[default]
    NotReceived,
    Received(Box<Request>),
}

impl RequestState {
    pub fn request(&self) -> Option<&Request> {
        match self {
            Self::NotReceived => None,
            Self::Received(request) => Some(request),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub subject: SubjectRecord,
    pub jurisdiction: Jurisdiction,
    pub source: Option<String>,
    pub reason: Option<String>,
    pub external_id: Option<String>,
    pub tags: Vec<String>,
    pub received_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub reminders: Vec<Reminder>,
    pub deadline_rule: DeadlineRule,
    pub deadline: NaiveDate,
    /// The total of all deadline extensions so far.
    pub extension: Span,
    pub hold: Option<Hold>,
    pub phase: Phase,
    pub shredded: bool,
    /// The subject kept for suppression after the erasure (opt-in), and whether it was lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppression: Option<crate::suppression::Suppression>,
    /// Earlier erased requests whose suppression entries the subject matched at receipt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previously_erased: Vec<RequestId>,
    /// Received under a policy that requires approval, and not approved yet.
    #[serde(default)]
    pub awaiting_approval: bool,
}

impl Request {
    pub fn status(&self) -> RequestStatus {
        match &self.phase {
            Phase::Grace if self.hold.is_some() => RequestStatus::OnHold,
            Phase::Grace if self.awaiting_approval => RequestStatus::AwaitingApproval,
            Phase::Grace => RequestStatus::Pending,
            Phase::Cleaning(_) if self.hold.is_some() => RequestStatus::OnHold,
            Phase::Cleaning(cleaning) if cleaning.any_exhausted() => RequestStatus::NeedsAttention,
            Phase::Cleaning(_) => RequestStatus::Due,
            Phase::Completed { .. } => RequestStatus::Completed,
            Phase::Cancelled { .. } => RequestStatus::Cancelled,
            Phase::Rejected { .. } => RequestStatus::Rejected,
        }
    }

    /// Why sending a reminder at `at` would be of no use, if it would: the grace period is
    /// over (the request became due, or its due time has passed), the request was cancelled
    /// or rejected, or it is on hold (erasure postponed, so the reminder's date is wrong).
    pub fn reminder_moot(&self, at: DateTime<Utc>) -> Option<ReminderNotSentReason> {
        match &self.phase {
            Phase::Cancelled { .. } => Some(ReminderNotSentReason::Cancelled),
            Phase::Rejected { .. } => Some(ReminderNotSentReason::Rejected),
            Phase::Cleaning(_) | Phase::Completed { .. } => Some(ReminderNotSentReason::GraceOver),
            Phase::Grace if at >= self.due_at => Some(ReminderNotSentReason::GraceOver),
            Phase::Grace if self.hold.is_some() => Some(ReminderNotSentReason::OnHold),
            Phase::Grace => None,
        }
    }

    /// The cleaning progress, once the request has been due.
    pub const fn cleaning(&self) -> Option<&Cleaning> {
        match &self.phase {
            Phase::Cleaning(cleaning) | Phase::Completed { cleaning, .. } => Some(cleaning),
            Phase::Grace | Phase::Cancelled { .. } | Phase::Rejected { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// When it is to be sent.
    pub at: DateTime<Utc>,
    pub outcome: ReminderOutcome,
}

impl Reminder {
    /// Sent or given up: nothing more is to be done or recorded for it.
    pub const fn is_resolved(&self) -> bool {
        matches!(
            self.outcome,
            ReminderOutcome::Sent { .. } | ReminderOutcome::NotSent { .. }
        )
    }
}

/// What became of one reminder (ADR 16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReminderOutcome {
    /// Nothing recorded yet: its time has not come, or the notifier has not accepted it yet.
    Pending,
    /// A `Reminded` event of a version before ADR 16: handed to the notifier's job, delivery
    /// not recorded. A later `ReminderSent` or `ReminderNotSent` still settles it.
    Reminded { at: DateTime<Utc> },
    /// The notifier accepted it.
    Sent { at: DateTime<Utc> },
    NotSent {
        at: DateTime<Utc>,
        reason: ReminderNotSentReason,
    },
}

impl ReminderOutcome {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Reminded { .. } => "reminded",
            Self::Sent { .. } => "sent",
            Self::NotSent { .. } => "not_sent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub since: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// The grace period runs: the subject may cancel.
    Grace,
    /// Due: cleaners are being told.
    Cleaning(Cleaning),
    Completed {
        #[serde(flatten)]
        cleaning: Cleaning,
        completed_at: DateTime<Utc>,
    },
    Cancelled {
        at: DateTime<Utc>,
        reason: Option<String>,
    },
    Rejected {
        at: DateTime<Utc>,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cleaning {
    /// When the request actually became due (the grace period's end, or earlier if expedited).
    pub became_due_at: DateTime<Utc>,
    pub expedited: bool,
    pub cleaners: BTreeMap<CleanerName, CleanerProgress>,
}

impl Cleaning {
    pub fn any_exhausted(&self) -> bool {
        self.cleaners
            .values()
            .any(|c| c.state == CleanerState::Exhausted)
    }

    /// Every planned cleaner succeeded or was skipped.
    pub fn all_done(&self) -> bool {
        self.cleaners.values().all(CleanerProgress::is_done)
    }

    /// The declared stores covered once `finishing` has its outcome (skipped when `skipped`),
    /// when every other planned cleaner is done: each store some planned cleaner erases, with
    /// its planned cleaners by outcome, in store-name order (ADR 30).
    pub fn covered_stores(&self, finishing: &CleanerName, skipped: bool) -> Vec<CoveredStore> {
        let mut stores: BTreeMap<&StoreName, CoveredStore> = BTreeMap::new();
        for (name, progress) in &self.cleaners {
            let was_skipped = if name == finishing {
                skipped
            } else {
                matches!(progress.state, CleanerState::Skipped { .. })
            };
            for store in &progress.stores {
                let covered = stores.entry(store).or_insert_with(|| CoveredStore {
                    store: store.clone(),
                    succeeded: Vec::new(),
                    skipped: Vec::new(),
                });
                if was_skipped {
                    covered.skipped.push(name.clone());
                } else {
                    covered.succeeded.push(name.clone());
                }
            }
        }
        stores.into_values().collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanerProgress {
    pub max_attempts: u32,
    /// Attempts whose result has been recorded.
    pub attempts: u32,
    pub state: CleanerState,
    pub last_error: Option<String>,
    /// The declared stores this cleaner erases, from the plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreName>,
}

impl CleanerProgress {
    pub const fn is_done(&self) -> bool {
        matches!(
            self.state,
            CleanerState::Succeeded { .. } | CleanerState::Skipped { .. }
        )
    }

    /// The number of the attempt that is (or is to be) in flight.
    pub const fn next_attempt(&self) -> u32 {
        self.attempts + 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CleanerState {
    /// Waiting for attempt `attempts + 1` (first call, or a retry after a retryable failure).
    Pending,
    Succeeded {
        attempt: u32,
        at: DateTime<Utc>,
    },
    /// No attempt left, or a failure that retrying cannot fix: a person must act.
    Exhausted,
    Skipped {
        at: DateTime<Utc>,
        reason: String,
    },
}

impl CleanerState {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded { .. } => "succeeded",
            Self::Exhausted => "exhausted",
            Self::Skipped { .. } => "skipped",
        }
    }
}
