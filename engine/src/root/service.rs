//! The application service over an opened database, and the upkeep of its projections
//! (`lethe audit export` catches them up; `lethe projections rebuild` rebuilds them).

use std::sync::Arc;

use super::Database;
use crate::app::Requests;
use crate::config::Config;
use crate::store::master_key::MasterKey;
use crate::store::StoreError;

/// The projections a process can rebuild, by name.
pub use crate::projections::ALL as PROJECTIONS;

impl Database {
    /// The application service over this database's log and projections; with `key`, it
    /// seals and opens subjects.
    pub fn app(&self, config: Arc<Config>, key: Option<MasterKey>) -> Requests {
        let requests = Requests::new(self.events.clone(), config)
            .with_projections(self.projections.clone())
            .with_awaited(self.awaited.clone())
            .with_schedule(self.schedule.clone());
        match key {
            Some(key) => requests.with_sealing(key, self.keys.clone()),
            None => requests,
        }
    }

    /// Brings the projections up to the head of the log.
    pub async fn catch_up_projections(&self) -> Result<(), StoreError> {
        crate::projections::catch_up(&self.events, &self.projections).await
    }

    /// Rebuilds the projection `name` from the log; `progress` is told how many events were
    /// handled and the log's head. Returns how many events were handled.
    pub async fn rebuild_projection(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(u64, i64) + Send),
    ) -> Result<u64, StoreError> {
        crate::projections::rebuild(&self.events, &self.projections, name, progress).await
    }
}
