//! The commands on one request after intake: the subject's or an administrator's cancel, and
//! an administrator's approve, reject, hold, release, extend, expedite, cleaner retry and skip. Each is
//! one command through [`Requests::execute`]; the answer is the request as it stands
//! afterwards. The doors check and shape the input (a reason's length, a span's syntax); the
//! aggregate decides whether the command is allowed.

use chrono::Utc;
use lethe_domain::{CleanerName, Command, RequestId, Span};

use super::planning::plan_cleaners;
use super::{EventMetadata, LoadedRequest, RequestError, Requests};

impl Requests {
    /// Approves a request that awaits approval: its grace period (and reminders) start now,
    /// by `[policy]`; the legal deadline stays counted from receipt. The reason, if given, is
    /// recorded in the event.
    pub async fn approve(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        reason: Option<String>,
    ) -> Result<LoadedRequest, RequestError> {
        let config = self.config().clone();
        self.execute(id, metadata, |request| Command::Approve {
            at: Utc::now(),
            policy: config.grace_policy(request.deadline_rule, true),
            reason: reason.clone(),
        })
        .await
    }

    /// Cancels the request (the subject during the grace period, or an administrator).
    pub async fn cancel(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        reason: Option<String>,
    ) -> Result<LoadedRequest, RequestError> {
        self.execute(id, metadata, |_| Command::Cancel {
            at: Utc::now(),
            reason: reason.clone(),
        })
        .await
    }

    /// Rejects the request; the aggregate requires a reason.
    pub async fn reject(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        reason: String,
    ) -> Result<LoadedRequest, RequestError> {
        self.execute(id, metadata, |_| Command::Reject {
            at: Utc::now(),
            reason: reason.clone(),
        })
        .await
    }

    /// Places a legal hold: nothing is erased until it is released.
    pub async fn hold(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        reason: String,
    ) -> Result<LoadedRequest, RequestError> {
        self.execute(id, metadata, |_| Command::PlaceHold {
            at: Utc::now(),
            reason: reason.clone(),
        })
        .await
    }

    /// Releases the hold.
    pub async fn release(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        reason: Option<String>,
    ) -> Result<LoadedRequest, RequestError> {
        self.execute(id, metadata, |_| Command::ReleaseHold {
            at: Utc::now(),
            reason: reason.clone(),
        })
        .await
    }

    /// Extends the deadline by `by`, within what the jurisdiction allows.
    pub async fn extend(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        by: Span,
        reason: String,
    ) -> Result<LoadedRequest, RequestError> {
        self.execute(id, metadata, |_| Command::ExtendDeadline {
            at: Utc::now(),
            by,
            reason: reason.clone(),
        })
        .await
    }

    /// Makes the request due now, with the cleaners the routing rules select for it (and the
    /// reason, if given, in the event).
    pub async fn expedite(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        reason: Option<String>,
    ) -> Result<LoadedRequest, RequestError> {
        let config = self.config().clone();
        self.execute(id, metadata, |request| Command::MarkDue {
            at: Utc::now(),
            cleaners: plan_cleaners(&config, request),
            expedite: true,
            reason: reason.clone(),
        })
        .await
    }

    /// Gives an exhausted cleaner another round: as many attempts as its retry policy allows
    /// (one for a cleaner no longer configured). The reason, if given, is recorded.
    pub async fn retry_cleaner(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        cleaner: &CleanerName,
        reason: Option<String>,
    ) -> Result<LoadedRequest, RequestError> {
        let extra = self
            .config()
            .cleaner(cleaner)
            .map_or(1, |c| c.retry.max_attempts);
        self.execute(id, metadata, |_| Command::RetryCleaner {
            cleaner: cleaner.clone(),
            at: Utc::now(),
            extra_attempts: extra,
            reason: reason.clone(),
        })
        .await
    }

    /// Skips a cleaner: the request can complete without it.
    pub async fn skip_cleaner(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        cleaner: &CleanerName,
        reason: String,
    ) -> Result<LoadedRequest, RequestError> {
        self.execute(id, metadata, |_| Command::SkipCleaner {
            cleaner: cleaner.clone(),
            at: Utc::now(),
            reason: reason.clone(),
        })
        .await
    }
}
