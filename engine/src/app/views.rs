//! What a request looks like from outside: the JSON shapes that the HTTP API returns and that
//! `lethe show` / `lethe history --json` print. One shape per question, shared by both doors.

use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::state::{CleanerState, Phase, Reminder, ReminderOutcome, Request};
use lethe_domain::{Aggregate, DeletionRequest, RequestId, RequestState, RequestStatus};
use serde::Serialize;
use uuid::Uuid;

use crate::app::progress::{CleanerProgress, Progress};
use crate::app::{LoadedRequest, SubjectAccess};
use crate::store::{verify_chain, StoreError, StreamHead};

/// The answer to a submission.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubmittedView {
    #[schema(value_type = String, format = Uuid)]
    pub id: RequestId,
    #[schema(value_type = String, example = "pending")]
    /// pending, on_hold, due, needs_attention, completed, cancelled or rejected
    pub status: RequestStatus,
    pub received_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub deadline: NaiveDate,
    /// Lets the data subject cancel during the grace period (`POST /v1/requests/{id}/cancel?token=`).
    pub cancel_token: String,
}

impl SubmittedView {
    pub fn new(request: &Request, cancel_token: String) -> Self {
        Self {
            id: request.id,
            status: request.status(),
            received_at: request.received_at,
            due_at: request.due_at,
            deadline: request.deadline,
            cancel_token,
        }
    }
}

/// A request's current state, without the subject's identifiers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestView {
    #[schema(value_type = String, format = Uuid)]
    pub id: RequestId,
    #[schema(value_type = String, example = "pending")]
    /// pending, on_hold, due, needs_attention, completed, cancelled or rejected
    pub status: RequestStatus,
    pub jurisdiction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub tags: Vec<String>,
    pub received_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub deadline: NaiveDate,
    pub reminders: Vec<ReminderView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub became_due_at: Option<DateTime<Utc>>,
    pub cleaners: Vec<CleanerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    pub shredded: bool,
    /// The subject kept for suppression after the erasure (`[suppression]`), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppression: Option<SuppressionView>,
    /// Earlier erased requests whose suppression entries this subject matched at receipt:
    /// the request was accepted and flagged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub previously_erased: Vec<RequestId>,
    /// The stream version this view reflects.
    pub version: i64,
}

/// A request's suppression: since when, until when, and whether an administrator lifted it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionView {
    pub since: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifted_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifted_reason: Option<String>,
}

/// One reminder and what became of it (ADR 16).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReminderView {
    /// When it is to be sent.
    pub at: DateTime<Utc>,
    /// True once the notifier accepted it; also for a `Reminded` recorded before delivery was
    /// tracked (`status` = `reminded`).
    pub sent: bool,
    #[schema(example = "sent")]
    /// pending, sent, not_sent, or reminded (recorded by a version that did not track
    /// delivery)
    pub status: &'static str,
    /// When the outcome was recorded (for `reminded`: when it was handed to the notifier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_at: Option<DateTime<Utc>>,
    /// Why it was not sent: grace_over, cancelled, rejected, on_hold, no_notifier,
    /// subject_unreadable or notifier_failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "grace_over")]
    pub reason: Option<&'static str>,
}

impl ReminderView {
    fn new(reminder: &Reminder) -> Self {
        let (outcome_at, reason) = match &reminder.outcome {
            ReminderOutcome::Pending => (None, None),
            ReminderOutcome::Reminded { at } | ReminderOutcome::Sent { at } => (Some(*at), None),
            ReminderOutcome::NotSent { at, reason } => (Some(*at), Some(reason.as_str())),
        };
        Self {
            at: reminder.at,
            sent: matches!(
                reminder.outcome,
                ReminderOutcome::Sent { .. } | ReminderOutcome::Reminded { .. }
            ),
            status: reminder.outcome.as_str(),
            outcome_at,
            reason,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HoldView {
    pub since: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CleanerView {
    pub name: String,
    #[schema(value_type = String, example = "succeeded")]
    /// pending, succeeded, exhausted or skipped
    pub status: &'static str,
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    /// What the cleaner last reported of the attempt whose result is awaited (ADR 36).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

/// An awaited attempt's latest progress, and the deadline it moved.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProgressView {
    pub attempt: u32,
    #[serde(flatten)]
    pub progress: Progress,
    /// When the cleaner reported it.
    pub reported_at: DateTime<Utc>,
    /// When the attempt fails unless its result, or more progress, comes.
    pub deadline: DateTime<Utc>,
}

impl RequestView {
    pub fn new(loaded: &LoadedRequest) -> Self {
        Self::of(&loaded.request, loaded.version())
    }

    /// The view of `request` as folded from the first `version` events of its stream.
    pub fn of(request: &Request, version: i64) -> Self {
        let (closed_at, close_reason) = match &request.phase {
            Phase::Completed { completed_at, .. } => (Some(*completed_at), None),
            Phase::Cancelled { at, reason } => (Some(*at), reason.clone()),
            Phase::Rejected { at, reason } => (Some(*at), Some(reason.clone())),
            Phase::Grace | Phase::Cleaning(_) => (None, None),
        };
        let cleaning = request.cleaning();
        Self {
            id: request.id,
            status: request.status(),
            jurisdiction: request.jurisdiction.to_string(),
            source: request.source.clone(),
            external_id: request.external_id.clone(),
            tags: request.tags.clone(),
            received_at: request.received_at,
            due_at: request.due_at,
            deadline: request.deadline,
            reminders: request.reminders.iter().map(ReminderView::new).collect(),
            hold: request.hold.as_ref().map(|h| HoldView {
                since: h.since,
                reason: h.reason.clone(),
            }),
            became_due_at: cleaning.map(|c| c.became_due_at),
            cleaners: cleaning
                .map(|c| {
                    c.cleaners
                        .iter()
                        .map(|(name, progress)| CleanerView {
                            name: name.to_string(),
                            status: progress.state.as_str(),
                            attempts: progress.attempts,
                            max_attempts: progress.max_attempts,
                            last_error: match progress.state {
                                CleanerState::Succeeded { .. } => None,
                                _ => progress.last_error.clone(),
                            },
                            progress: None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            closed_at,
            close_reason,
            shredded: request.shredded,
            suppression: request.suppression.as_ref().map(|s| SuppressionView {
                since: s.since,
                expires_at: s.expires_at,
                lifted_at: s.lifted.as_ref().map(|l| l.at),
                lifted_reason: s.lifted.as_ref().map(|l| l.reason.clone()),
            }),
            previously_erased: request.previously_erased.clone(),
            version,
        }
    }

    /// This view with each pending cleaner's latest progress on its awaited attempt.
    #[must_use]
    pub fn with_progress(mut self, reported: &[CleanerProgress]) -> Self {
        for cleaner in &mut self.cleaners {
            cleaner.progress = reported
                .iter()
                .find(|r| r.cleaner.as_str() == cleaner.name && cleaner.status == "pending")
                .map(|r| ProgressView {
                    attempt: r.attempt,
                    progress: r.progress,
                    reported_at: r.at,
                    deadline: r.deadline,
                });
        }
        self
    }
}

/// The auditor's replay: every event with its metadata, the status after it, and the verdict
/// of the hash chain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    #[schema(value_type = String, format = Uuid)]
    pub id: RequestId,
    /// The subject's identifiers while they can be read; "shredded" once the key is gone;
    /// "sealed" where no key that opens it is at hand (the events are shown all the same).
    pub subject: SubjectView,
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_error: Option<ChainErrorView>,
    pub events: Vec<HistoryEntry>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChainErrorView {
    pub version: i64,
    pub position: i64,
    pub problem: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub position: i64,
    pub version: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub event_id: Uuid,
    pub command_id: Option<String>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub schema_version: i32,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    #[schema(value_type = String, example = "due")]
    pub status_after: RequestStatus,
    /// The whole request as it was after this event (asked for with `?states=true`): what
    /// `GET /v1/requests/{id}?at=<position>` rebuilds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_after: Option<RequestView>,
    pub hash: String,
    pub prev_hash: String,
}

/// What the auditor sees of the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectView {
    Identifiers(std::collections::BTreeMap<String, String>),
    Shredded,
    Sealed,
}

impl From<SubjectAccess> for SubjectView {
    fn from(access: SubjectAccess) -> Self {
        match access {
            SubjectAccess::Clear(ids) => Self::Identifiers(ids),
            SubjectAccess::Shredded => Self::Shredded,
            SubjectAccess::Unavailable => Self::Sealed,
        }
    }
}

impl HistoryView {
    /// The history of `loaded`; with `states`, each entry carries the whole request as it was
    /// after its event.
    pub fn new(
        loaded: &LoadedRequest,
        head: Option<&StreamHead>,
        subject: SubjectAccess,
        states: bool,
    ) -> Result<Self, StoreError> {
        let chain = verify_chain(&loaded.events, head);
        let mut state = RequestState::NotReceived;
        let mut events = Vec::with_capacity(loaded.events.len());
        for event in &loaded.events {
            state = DeletionRequest::apply_event(state, event.event()?);
            let status_after = state
                .request()
                .map_or(RequestStatus::Pending, Request::status);
            let state_after = state
                .request()
                .filter(|_| states)
                .map(|request| RequestView::of(request, event.version));
            events.push(HistoryEntry {
                position: event.position,
                version: event.version,
                event_type: event.event_type.clone(),
                recorded_at: event.recorded_at,
                actor: event.actor.clone(),
                event_id: event.event_id,
                command_id: event.command_id.clone(),
                correlation_id: event.correlation_id,
                causation_id: event.causation_id,
                schema_version: event.schema_version,
                data: event.payload.clone(),
                status_after,
                state_after,
                hash: event.hash.clone(),
                prev_hash: event.prev_hash.clone(),
            });
        }
        Ok(Self {
            id: loaded.request.id,
            subject: subject.into(),
            verified: chain.is_ok(),
            chain_error: chain.err().map(|b| ChainErrorView {
                version: b.version,
                position: b.position,
                problem: b.problem,
            }),
            events,
        })
    }
}
