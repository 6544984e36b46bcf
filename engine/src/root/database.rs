//! The database a process works on, opened once: the event log and the key store (the store
//! layer's), and the workflow's and the projections' tables, all on the one pool of the
//! backend the URL names.

use std::sync::Arc;
use std::time::Duration;

use crate::app::progress::AwaitedResults;
use crate::app::request_page::AttemptSchedule;
use crate::projections::ProjectionStore;
use crate::store::keys::KeyStore;
use crate::store::{Backend, EventStore, OpenError, TOOL_ACQUIRE_TIMEOUT};
use crate::workflow::WorkflowStore;

/// Every store of one database: the event log, the workflow's and projections' tables and the
/// keys.
#[derive(Debug, Clone)]
pub struct Database {
    pub events: Arc<dyn EventStore>,
    pub workflow: Arc<dyn WorkflowStore>,
    pub projections: Arc<dyn ProjectionStore>,
    pub keys: Arc<dyn KeyStore>,
    /// The workflow's awaited attempts, where cleaners' progress is kept.
    pub awaited: Arc<dyn AwaitedResults>,
    /// The workflow's scheduled cleaner attempts.
    pub schedule: Arc<dyn AttemptSchedule>,
}

impl Database {
    /// Opens the database a URL names: `postgres://...` or `sqlite://...` (the file and its
    /// parent directory are created when missing). Applies pending migrations when `migrate`
    /// is set, then fills what a migration asked to fill from the projected rows. Calls wait up to [`TOOL_ACQUIRE_TIMEOUT`] for a Postgres connection.
    pub async fn open(url: &str, migrate: bool) -> Result<Self, OpenError> {
        Self::open_with(url, migrate, TOOL_ACQUIRE_TIMEOUT).await
    }

    /// [`Database::open`], with every call waiting at most `acquire_timeout` for a Postgres
    /// connection before it fails with [`crate::store::StoreError::Unavailable`] (`lethe
    /// serve`: `[database] acquire_timeout`). SQLite is a local file: its calls wait for the
    /// one writing connection, and for another process's lock up to its busy timeout.
    pub async fn open_with(
        url: &str,
        migrate: bool,
        acquire_timeout: Duration,
    ) -> Result<Self, OpenError> {
        let backend = Backend::open(url, acquire_timeout).await?;
        if !migrate {
            return Ok(Self::from(backend));
        }
        backend.migrate().await?;
        let database = Self::from(backend);
        // The figures a migration added are computed from the rows once (ADR 37).
        if database.projections.backfill_tallies().await? {
            tracing::info!("the projection's figures were filled from its rows");
        }
        Ok(database)
    }
}

impl From<Backend> for Database {
    fn from(backend: Backend) -> Self {
        match backend {
            Backend::Postgres(store) => Self {
                events: store.clone(),
                workflow: store.clone(),
                projections: store.clone(),
                awaited: store.clone(),
                schedule: store.clone(),
                keys: store,
            },
            Backend::Sqlite(store) => Self {
                events: store.clone(),
                workflow: store.clone(),
                projections: store.clone(),
                awaited: store.clone(),
                schedule: store.clone(),
                keys: store,
            },
        }
    }
}
