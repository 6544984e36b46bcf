//! `kind = "object_store"`: Lethe deletes objects from an S3-compatible store itself (docs/CLEANERS.md).

use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreCleanerConfig {
    /// The endpoint.
    pub url: String,
}

impl ObjectStoreCleanerConfig {
    /// Checks the settings; `key` names a field of this cleaner (`cleaners[2].url`).
    pub(super) fn check(&self, _key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        Ok(())
    }
}
