//! The application service: every command and query, the one door through which the edges
//! (HTTP, CLI) and the workers reach the log, the keys and the projections.
//!
//! [`Requests`] is the service. Its methods, one concern per file: intake (`intake`, `bulk`),
//! commands on one request (`commands`, `results`, `execute`), the subject's keys
//! (`subjects`), a long erasure's progress (`progress`), queries (`queries`, `history`, `feed`, `dashboard`, `coverage`), the shapes the doors
//! render (`views`, `stats`), whole-log audits (`audit`), master-key rotation (`keys`) and
//! cleaner planning (`planning`).

pub mod annual_report;
pub mod audit;
pub mod bulk;
mod commands;
pub mod coverage;
pub mod dashboard;
mod error;
mod execute;
mod export_file;
pub mod feed;
mod history;
mod intake;
pub mod keys;
pub mod planning;
pub mod progress;
pub mod queries;
pub mod receipt;
pub mod replay;
pub mod request_page;
mod results;
pub mod stats;
mod subjects;
pub mod suppression;
pub mod verify_export;
pub mod views;

use std::sync::Arc;

use lethe_domain::error::InvalidInput;
use lethe_domain::state::Request;
use lethe_domain::{Aggregate, DeletionRequest, RequestState};

pub use error::RequestError;
pub use intake::{Prepared, Recorded, Resolved, Submission, Submitted, Written};
pub use results::CleanerReport;
pub use subjects::SubjectAccess;

use crate::config::Config;
use crate::projections::ProjectionStore;
/// The master key: the doors hold it to hand to the service's cancel-token checks.
pub use crate::store::master_key::MasterKey;
/// Who asks for a command, and its idempotency key: recorded with the events it appends.
pub use crate::store::EventMetadata;
use crate::store::{EventStore, RecordedEvent, StoreError};
use subjects::Sealing;

/// Limits on the free-text fields of a submission.
pub const MAX_SOURCE_LEN: usize = 128;
pub const MAX_REASON_LEN: usize = 1024;
pub const MAX_EXTERNAL_ID_LEN: usize = 256;
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 64;

/// A request as loaded from its stream.
#[derive(Debug, Clone)]
pub struct LoadedRequest {
    pub request: Request,
    pub events: Vec<RecordedEvent>,
}

impl LoadedRequest {
    pub fn version(&self) -> i64 {
        self.events.last().map_or(0, |e| e.version)
    }
}

#[derive(Debug, Clone)]
pub struct Requests {
    store: Arc<dyn EventStore>,
    config: Arc<Config>,
    /// For the list and stats queries; absent in tools that only write.
    projections: Option<Arc<dyn ProjectionStore>>,
    /// Seals subjects (crypto-shredding) and finds open requests of the same subject. Without
    /// it subjects are recorded in clear (only tests do that).
    sealing: Option<Sealing>,
    /// The attempts whose results are awaited, where cleaners' progress is kept; absent in
    /// tools that run no workflow.
    awaited: Option<Arc<dyn progress::AwaitedResults>>,
    /// When cleaners' next attempts are due; absent in tools that run no workflow.
    schedule: Option<Arc<dyn request_page::AttemptSchedule>>,
}

impl Requests {
    pub fn new(store: Arc<dyn EventStore>, config: Arc<Config>) -> Self {
        Self {
            store,
            config,
            projections: None,
            sealing: None,
            awaited: None,
            schedule: None,
        }
    }

    /// Adds where awaited attempts and their progress are kept.
    #[must_use]
    pub fn with_awaited(mut self, awaited: Arc<dyn progress::AwaitedResults>) -> Self {
        self.awaited = Some(awaited);
        self
    }

    pub(crate) fn awaited(&self) -> Option<&Arc<dyn progress::AwaitedResults>> {
        self.awaited.as_ref()
    }

    /// Adds where cleaners' next attempts are scheduled.
    #[must_use]
    pub fn with_schedule(mut self, schedule: Arc<dyn request_page::AttemptSchedule>) -> Self {
        self.schedule = Some(schedule);
        self
    }

    pub(crate) fn schedule(&self) -> Option<&Arc<dyn request_page::AttemptSchedule>> {
        self.schedule.as_ref()
    }

    /// Adds the projections that answer list and stats queries.
    #[must_use]
    pub fn with_projections(mut self, projections: Arc<dyn ProjectionStore>) -> Self {
        self.projections = Some(projections);
        self
    }

    pub const fn projections(&self) -> Option<&Arc<dyn ProjectionStore>> {
        self.projections.as_ref()
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }
}

/// Folds a stream into its request.
pub fn loaded(events: Vec<RecordedEvent>) -> Result<LoadedRequest, RequestError> {
    let mut state = RequestState::NotReceived;
    for event in &events {
        state = DeletionRequest::apply_event(state, event.event()?);
    }
    match state {
        RequestState::Received(request) => Ok(LoadedRequest {
            request: *request,
            events,
        }),
        RequestState::NotReceived => {
            Err(StoreError::Corrupt("a stream without a Received event".to_owned()).into())
        }
    }
}

/// A trimmed, bounded, printable optional text; empty means absent.
pub fn text_field(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, InvalidInput> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    // Characters, not bytes: the limit JSON Schema's `maxLength` and a pattern can state.
    if value.chars().count() > max {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(Some(value.to_owned()))
}
