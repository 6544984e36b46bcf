//! Requests submitted through the application service, and made due at once, the grace
//! period skipped, with every configured cleaner that applies planned (what `expedite` does,
//! without HTTP).

use std::collections::BTreeMap;

use lethe_domain::{Command, RequestId};
use lethe_engine::app::planning::plan_cleaners;
use lethe_engine::app::{Requests, Submission};
use lethe_engine::store::EventMetadata;

/// Submits `subject` as actor `test` (the default jurisdiction); the new request's id.
pub async fn submitted(requests: &Requests, subject: BTreeMap<String, String>) -> RequestId {
    let submission = Submission {
        subject,
        ..Submission::default()
    };
    requests
        .submit(submission, None, "test")
        .await
        .unwrap()
        .loaded
        .request
        .id
}

/// Submits `subject` and marks the request due now.
pub async fn due_request(requests: &Requests, subject: BTreeMap<String, String>) -> RequestId {
    let id = submitted(requests, subject).await;
    let config = requests.config().clone();
    requests
        .execute(id, &EventMetadata::new("test"), |request| {
            Command::MarkDue {
                at: chrono::Utc::now(),
                cleaners: plan_cleaners(&config, request),
                expedite: true,
                reason: None,
            }
        })
        .await
        .unwrap();
    id
}
