//! `[engine]`: the workflow's moving parts.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigDuration;

/// Knobs of the workflow engine itself; the defaults suit production, tests shorten them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// How often idle workers look for due timers and jobs.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: ConfigDuration,
    /// How long a claimed job or subscription stays with its owner without renewal.
    #[serde(default = "default_lease")]
    pub lease: ConfigDuration,
    /// Concurrent cleaner calls per engine instance.
    #[serde(default = "default_dispatch_concurrency")]
    pub dispatch_concurrency: u32,
    /// The URL cleaners and subjects reach this engine at (for `callback_url` and cancel
    /// links); default `http://` + the listen address.
    pub public_url: Option<String>,
}

fn default_poll_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(500))
}
fn default_lease() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
/// A request's cleaners are called side by side, so 64 is a dozen requests in flight
/// (docs/PERFORMANCE.md: 16 gave a third of the throughput on two cores).
const fn default_dispatch_concurrency() -> u32 {
    64
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            poll_interval: default_poll_interval(),
            lease: default_lease(),
            dispatch_concurrency: default_dispatch_concurrency(),
            public_url: None,
        }
    }
}
