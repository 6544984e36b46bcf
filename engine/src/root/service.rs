//! The application service over an opened database, and the upkeep of its read models
//! (`lethe audit export` catches them up; `lethe projections rebuild` rebuilds them).

use std::sync::Arc;

use super::Database;
use crate::app::Requests;
use crate::config::Config;
use crate::store::master_key::MasterKey;
use crate::store::StoreError;

/// The read models a process can rebuild, by name.
pub use crate::read_models::ALL as READ_MODELS;

impl Database {
    /// The application service over this database's log and read models; with `key`, it
    /// seals and opens subjects.
    pub fn app(&self, config: Arc<Config>, key: Option<MasterKey>) -> Requests {
        let requests =
            Requests::new(self.events.clone(), config).with_read_models(self.read_models.clone());
        match key {
            Some(key) => requests.with_sealing(key, self.keys.clone()),
            None => requests,
        }
    }

    /// Brings the read models up to the head of the log.
    pub async fn catch_up_read_models(&self) -> Result<(), StoreError> {
        crate::read_models::catch_up(&self.events, &self.read_models).await
    }

    /// Rebuilds the read model `name` from the log; `progress` is told how many events were
    /// handled and the log's head. Returns how many events were handled.
    pub async fn rebuild_read_model(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(u64, i64) + Send),
    ) -> Result<u64, StoreError> {
        crate::read_models::rebuild(&self.events, &self.read_models, name, progress).await
    }
}
