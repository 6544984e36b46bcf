//! The notifier is told of each completion, with the request's signed receipt (ADR 32): the
//! `completion` job the saga sets on `Completed` calls the notifier until it accepts, with
//! backoff, for at most [`MAX_CALLS`] calls. Nothing is recorded in the log: the receipt can
//! be fetched again at any time.

use chrono::{DateTime, Utc};
use lethe_domain::RequestId;

use super::workers::{JobOutcome, Workers};
use super::{micros, Job, WorkflowError};
use crate::app::receipt::{body_of, sign};
use crate::app::LoadedRequest;
use crate::cleaners::http::notify;

/// Calls made before the notification is given up (about a day at the backoff's 5-minute
/// cap).
pub const MAX_CALLS: u32 = 300;

/// The `Idempotency-Key` of every notifier call for one completion.
pub fn completion_idempotency_key(request: RequestId) -> String {
    format!("{request}:completed")
}

impl Workers {
    /// Tells the notifier that `job`'s request completed: `{"type": "completed",
    /// "request_id", "receipt"}`, the receipt as the text of its file (so its bytes verify).
    pub(super) async fn run_completion(
        &self,
        job: &Job,
        now: DateTime<Utc>,
        preloaded: Option<LoadedRequest>,
    ) -> Result<JobOutcome, WorkflowError> {
        let Some(notifier) = &self.config.notifier else {
            return Ok(JobOutcome::Finish);
        };
        let Some(loaded) = self.loaded(job.request_id, preloaded).await? else {
            return Ok(JobOutcome::Finish);
        };
        let Some(body) = body_of(&loaded)? else {
            return Ok(JobOutcome::Finish);
        };
        let receipt = sign(body, &self.key.receipt_key());
        let text = String::from_utf8(receipt.to_bytes()).unwrap_or_default();
        let notification = serde_json::json!({
            "type": "completed",
            "request_id": job.request_id,
            "receipt": text,
        });
        let started = std::time::Instant::now();
        let answer = notify(
            &self.client,
            &notifier.url,
            notifier.secret.as_deref(),
            &notification,
            &completion_idempotency_key(job.request_id),
            notifier.timeout.0,
            now,
        )
        .await;
        let Err(error) = answer else {
            return Ok(JobOutcome::Finish);
        };
        let calls = job.attempt.saturating_add(1);
        if calls >= MAX_CALLS {
            tracing::warn!(request.id = %job.request_id, calls, error = %error, "the notifier did not accept the completion; giving up");
            return Ok(JobOutcome::Finish);
        }
        let at = now + micros(started.elapsed());
        let delay = super::notifier::NOTIFY_RETRY.delay_after(calls, rand::random(), None);
        tracing::warn!(request.id = %job.request_id, calls, error = %error, "the notifier failed to take the completion; retrying");
        Ok(JobOutcome::Reschedule(at + micros(delay), calls))
    }
}
