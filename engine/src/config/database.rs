//! `[database]`: how long to wait for the database before calling it unavailable.

use std::time::Duration;

use serde::Deserialize;

use super::validate::invalid;
use super::{ConfigDuration, ConfigError};

/// Waiting for the database (Postgres). While it is unreachable, requests are answered 503
/// with `Retry-After` after at most `acquire_timeout`, and `/readyz` after `ready_timeout`;
/// the workflow keeps retrying at its poll interval (ADR 14).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// How long a call waits for a pooled connection (including opening a new one) before it
    /// fails as unavailable.
    #[serde(default = "default_acquire_timeout")]
    pub acquire_timeout: ConfigDuration,
    /// How long `/readyz` waits for the database's answer before saying 503.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: ConfigDuration,
}

/// Far above a healthy pool's waits (a submission's p99 is tens of milliseconds at 32 clients,
/// docs/PERFORMANCE.md), and short enough to answer an outage within a second.
fn default_acquire_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}
/// Below the 1 s time-out that readiness probes commonly use.
fn default_ready_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(500))
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            acquire_timeout: default_acquire_timeout(),
            ready_timeout: default_ready_timeout(),
        }
    }
}

impl DatabaseConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (key, duration) in [
            ("database.acquire_timeout", self.acquire_timeout),
            ("database.ready_timeout", self.ready_timeout),
        ] {
            if duration.0.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn database_timeouts_default_short_parse_and_refuse_zero() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.database.acquire_timeout.0, Duration::from_secs(1));
        assert_eq!(config.database.ready_timeout.0, Duration::from_millis(500));
        let config =
            Config::parse("[database]\nacquire_timeout = \"3s\"\nready_timeout = \"250ms\"\n")
                .unwrap();
        assert_eq!(config.database.acquire_timeout.0, Duration::from_secs(3));
        assert_eq!(config.database.ready_timeout.0, Duration::from_millis(250));
        for key in ["acquire_timeout", "ready_timeout"] {
            let error = Config::parse(&format!("[database]\n{key} = \"0s\"\n")).unwrap_err();
            assert!(
                error.to_string().contains(&format!("database.{key}")),
                "{error}"
            );
        }
    }
}
