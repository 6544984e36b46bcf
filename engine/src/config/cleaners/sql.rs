//! `kind = "sql"`: Lethe runs statements against a database itself (docs/CLEANERS.md).

use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCleanerConfig {
    /// The database, without its password.
    pub url: String,
}

impl SqlCleanerConfig {
    /// Checks the settings; `key` names a field of this cleaner (`cleaners[2].url`).
    pub(super) fn check(&self, _key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        Ok(())
    }
}
