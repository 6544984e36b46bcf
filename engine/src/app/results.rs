//! A cleaner's result recorded by a door: the cleaner's own `POST …/result`, a Kafka result,
//! or a person with `lethe confirm`. The text in it is redacted of the subject's identifiers
//! and cut to length by [`Requests::execute_result`].

use std::collections::BTreeMap;

use chrono::Utc;
use lethe_domain::{CleanerName, Command, RequestId};

use super::{EventMetadata, LoadedRequest, RequestError, Requests};

/// What a cleaner (or a person for it) reports of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanerReport {
    Succeeded {
        /// How many records of each kind were deleted.
        deleted: Option<BTreeMap<String, u64>>,
        detail: Option<String>,
    },
    Failed {
        error: String,
        /// Whether another attempt may be made.
        retryable: bool,
    },
}

impl Requests {
    /// Records the result of `cleaner`'s attempt `attempt`.
    pub async fn record_result(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        cleaner: &CleanerName,
        attempt: u32,
        report: CleanerReport,
    ) -> Result<LoadedRequest, RequestError> {
        self.execute_result(id, metadata, |_| match &report {
            CleanerReport::Succeeded { deleted, detail } => Command::RecordCleanerSuccess {
                cleaner: cleaner.clone(),
                attempt,
                at: Utc::now(),
                deleted: deleted.clone(),
                detail: detail.clone(),
            },
            CleanerReport::Failed { error, retryable } => Command::RecordCleanerFailure {
                cleaner: cleaner.clone(),
                attempt,
                at: Utc::now(),
                error: error.clone(),
                status_code: None,
                retryable: *retryable,
                retry_after_seconds: None,
            },
        })
        .await
    }

    /// A result confirmed by hand (`lethe confirm`): a success, or a retryable failure with
    /// `detail` as its error.
    pub async fn confirm(
        &self,
        id: RequestId,
        metadata: &EventMetadata,
        cleaner: &CleanerName,
        attempt: u32,
        failed: bool,
        detail: Option<String>,
    ) -> Result<LoadedRequest, RequestError> {
        let report = if failed {
            CleanerReport::Failed {
                error: detail.unwrap_or_else(|| "reported failed by hand".to_owned()),
                retryable: true,
            }
        } else {
            CleanerReport::Succeeded {
                deleted: None,
                detail,
            }
        };
        self.record_result(id, metadata, cleaner, attempt, report)
            .await
    }
}
