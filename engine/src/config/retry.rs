//! A cleaner's `retry`: how failed attempts are spaced and how many there are.

use std::time::Duration;

use lethe_domain::RetryPolicy;
use serde::Deserialize;

use super::ConfigDuration;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_initial")]
    pub initial: ConfigDuration,
    #[serde(default = "default_max_backoff")]
    pub max: ConfigDuration,
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
}

const fn default_max_attempts() -> u32 {
    8
}
fn default_initial() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}
fn default_max_backoff() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(6 * 3600))
}
const fn default_multiplier() -> f64 {
    2.0
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial: default_initial(),
            max: default_max_backoff(),
            multiplier: default_multiplier(),
        }
    }
}

impl RetryConfig {
    pub const fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            initial: self.initial.0,
            max: self.max.0,
            multiplier: self.multiplier,
        }
    }
}
