//! Reminders through the notifier (ADR 16): each reminder's job calls the notifier until it
//! accepts, with backoff, and ends by recording what became of the reminder.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lethe_domain::event::ReminderNotSentReason;
use lethe_domain::state::ReminderOutcome;
use lethe_domain::{Command, RequestId, RetryPolicy};

use super::workers::{JobOutcome, Workers};
use super::{micros, Job, WorkflowError};
use crate::app::{LoadedRequest, SubjectAccess};
use crate::cleaners::http::notify;

/// The backoff between calls to a notifier that failed: doubling from 1 s to at most 5 min,
/// jittered; tried until the reminder is moot (ADR 16), so `max_attempts` plays no part.
pub(super) const NOTIFY_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial: Duration::from_secs(1),
    max: Duration::from_secs(300),
    multiplier: 2.0,
};
/// Who records a reminder's outcome.
const REMINDER_ACTOR: &str = "system:reminders";

/// The `Idempotency-Key` of every notifier call for one reminder.
pub fn reminder_idempotency_key(request: RequestId, index: u32) -> String {
    format!("{request}:reminder:{index}")
}

/// When to call the notifier again after `calls` failed calls, the last ending at `at`
/// (`jitter` in `[0, 1)`): `None` when that would not be before the grace period ends, at
/// `due_at`.
fn next_try(
    at: DateTime<Utc>,
    calls: u32,
    jitter: f64,
    due_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let next = at + micros(NOTIFY_RETRY.delay_after(calls, jitter, None));
    (next < due_at).then_some(next)
}

impl Workers {
    /// Delivers reminder `job.key` (ADR 16). The job's attempt counts the notifier calls made
    /// for it so far, none accepted. It ends by recording an outcome: `ReminderSent` once the
    /// notifier accepted (never before: a crash before the append leaves the job to call
    /// again, with the same `Idempotency-Key`), or `ReminderNotSent` with the reason once the
    /// reminder can no longer be useful. A failed call is tried again with backoff while a
    /// try still fits before the grace period ends.
    pub(super) async fn run_reminder(
        &self,
        job: &Job,
        now: DateTime<Utc>,
        preloaded: Option<LoadedRequest>,
    ) -> Result<JobOutcome, WorkflowError> {
        let Ok(index) = job.key.parse::<u32>() else {
            return Ok(JobOutcome::Finish);
        };
        let Some(loaded) = self.loaded(job.request_id, preloaded).await? else {
            return Ok(JobOutcome::Finish);
        };
        let request = &loaded.request;
        let Some(reminder) = request.reminders.get(index as usize) else {
            return Ok(JobOutcome::Finish);
        };
        if reminder.is_resolved() {
            return Ok(JobOutcome::Finish);
        }
        let moot = request.reminder_moot(now);
        if moot.is_some() && matches!(reminder.outcome, ReminderOutcome::Reminded { .. }) {
            // A `Reminded` of an older version: it may have been delivered, which its log
            // does not say; claiming "not sent" could be false, so it stays `reminded`.
            return Ok(JobOutcome::Finish);
        }
        let calls = job.attempt;
        let not_sent = |reason, calls, last_error| Command::RecordReminderNotSent {
            index,
            at: now,
            reason,
            calls,
            last_error,
        };
        if let Some(reason) = moot {
            let command = not_sent(reason, calls, None);
            return self.record(loaded, REMINDER_ACTOR, command).await;
        }
        let Some(notifier) = &self.config.notifier else {
            let command = not_sent(ReminderNotSentReason::NoNotifier, calls, None);
            return self.record(loaded, REMINDER_ACTOR, command).await;
        };
        let SubjectAccess::Clear(subject) = self.requests.subject_of(request).await? else {
            let command = not_sent(ReminderNotSentReason::SubjectUnreadable, calls, None);
            return self.record(loaded, REMINDER_ACTOR, command).await;
        };
        let token = self.key.cancel_token(request.id);
        let body = serde_json::json!({
            "request_id": request.id,
            "reminder": index,
            "subject": subject,
            "due_at": request.due_at,
            "deadline": request.deadline,
            "cancel_token": token,
            "cancel_url": format!("{}/v1/requests/{}/cancel?token={token}", self.public_url, request.id),
        });
        let started = std::time::Instant::now();
        let answer = notify(
            &self.client,
            &notifier.url,
            notifier.secret.as_deref(),
            &body,
            &reminder_idempotency_key(request.id, index),
            notifier.timeout.0,
            now,
        )
        .await;
        let at = now + micros(started.elapsed());
        let calls = calls.saturating_add(1);
        let error = match answer {
            Ok(()) => {
                let command = Command::RecordReminderSent { index, at, calls };
                return self.record(loaded, REMINDER_ACTOR, command).await;
            }
            Err(error) => error,
        };
        let Some(next) = next_try(at, calls, rand::random(), request.due_at) else {
            tracing::warn!(request.id = %request.id, reminder = index, calls, error = %error, "the notifier did not accept the reminder, and no try fits before the grace period ends");
            let command = not_sent(ReminderNotSentReason::NotifierFailed, calls, Some(error));
            return self.record(loaded, REMINDER_ACTOR, command).await;
        };
        tracing::warn!(request.id = %request.id, reminder = index, calls, error = %error, retry_at = %next, "the notifier failed; retrying");
        Ok(JobOutcome::Reschedule(next, calls))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000)
    }

    #[test]
    fn the_notifier_is_called_again_after_a_doubling_jittered_backoff_up_to_five_minutes() {
        let far = at() + TimeDelta::days(30);
        let delay =
            |calls, jitter| (next_try(at(), calls, jitter, far).unwrap() - at()).num_milliseconds();
        // The nominal delay doubles from 1 s to at most 300 s; jitter draws it from its upper
        // half.
        let nominal = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300];
        for (calls, seconds) in (1..).zip(nominal) {
            let nominal_ms = seconds * 1000;
            assert_eq!(delay(calls, 0.0), nominal_ms / 2, "after {calls} calls");
            let longest = delay(calls, 0.999_999);
            assert!(
                longest <= nominal_ms && longest > nominal_ms * 99 / 100,
                "after {calls} calls: {longest} ms"
            );
        }
        // However long it has failed, never more than five minutes.
        assert!(delay(100_000, 0.999_999) <= 300_000);
    }

    #[test]
    fn no_try_is_scheduled_at_or_after_the_end_of_the_grace_period() {
        let next = next_try(at(), 3, 0.5, at() + TimeDelta::days(1)).unwrap();
        assert!(next > at());
        assert_eq!(next_try(at(), 3, 0.5, next), None);
        assert_eq!(
            next_try(at(), 3, 0.5, next + TimeDelta::microseconds(1)),
            Some(next)
        );
    }
}
