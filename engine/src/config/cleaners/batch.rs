//! `batch = { max = 500, wait = "10m" }`: due requests collected and sent to a cleaner in one
//! call, whatever its kind.

use std::time::Duration;

use serde::Deserialize;

use crate::config::validate::invalid;
use crate::config::{ConfigDuration, ConfigError};

/// At most this many requests in one call.
pub const MAX_BATCH: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// At most this many requests in one call.
    #[serde(default = "default_max")]
    pub max: u32,
    /// How long the first request of a batch waits for others to join it.
    #[serde(default = "default_wait")]
    pub wait: ConfigDuration,
}

fn default_max() -> u32 {
    100
}

fn default_wait() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

impl BatchConfig {
    pub(in crate::config) fn check(&self, key: &str) -> Result<(), ConfigError> {
        if !(1..=MAX_BATCH).contains(&self.max) {
            return Err(invalid(
                format!("{key}.max"),
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        Ok(())
    }
}
