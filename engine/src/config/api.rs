//! `[api]` (the HTTP API's limits) and `[[tokens]]` (who may call it).

use std::path::PathBuf;
use std::time::Duration;

use lethe_domain::CleanerName;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::validate::invalid;
use super::{ConfigDuration, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Lowercase hex SHA-256 of the token: written here, or named by `sha256_env` /
    /// `sha256_file` and read into this field when the configuration loads.
    #[serde(default)]
    pub sha256: String,
    pub sha256_env: Option<String>,
    pub sha256_file: Option<PathBuf>,
    pub scopes: Vec<String>,
}

/// Lowercase hex SHA-256 of a token: the form `[[tokens]] sha256` takes.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Limits of the HTTP API.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Requests per second allowed to each token (all anonymous callers share one budget);
    /// absent: no limit.
    pub rate_per_second: Option<u32>,
    /// How many requests a token may send at once above its rate (default: twice the rate).
    pub burst: Option<u32>,
    /// A streamed bulk body that sends no byte for this long is cut short (default 30 s):
    /// the lines received are answered, then a last line says the body stalled.
    pub body_idle_timeout: Option<ConfigDuration>,
}

impl ApiConfig {
    pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn body_idle_timeout(&self) -> Duration {
        self.body_idle_timeout
            .map_or(Self::DEFAULT_BODY_IDLE_TIMEOUT, |d| d.0)
    }
}

/// The scopes a token can carry (plus `cleaner:<name>`).
pub const SCOPES: [&str; 6] = [
    "requests:write",
    "requests:read",
    "requests:approve",
    "audit:read",
    "suppression:read",
    "admin",
];

impl ApiConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.body_idle_timeout.is_some_and(|d| d.0.is_zero()) {
            return Err(invalid("api.body_idle_timeout", "must be longer than zero"));
        }
        if self.rate_per_second == Some(0) {
            return Err(invalid("api.rate_per_second", "must be at least 1"));
        }
        Ok(())
    }
}

impl TokenConfig {
    /// Checks `tokens[index]`.
    pub(super) fn check(&self, index: usize) -> Result<(), ConfigError> {
        let key = |field: &str| format!("tokens[{index}].{field}");
        let hex_ok = self.sha256.len() == 64
            && self
                .sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if !hex_ok {
            return Err(invalid(
                key("sha256"),
                "must be 64 lowercase hex characters (lethe token create prints it)",
            ));
        }
        if self.name.trim().is_empty() {
            return Err(invalid(key("name"), "must not be empty"));
        }
        for (j, scope) in self.scopes.iter().enumerate() {
            let known = SCOPES.contains(&scope.as_str())
                || scope
                    .strip_prefix("cleaner:")
                    .is_some_and(|name| CleanerName::parse(name).is_ok());
            if !known {
                return Err(invalid(
                    format!("tokens[{index}].scopes[{j}]"),
                    format!(
                        "{scope:?} is not a scope; use {}, or cleaner:<name>",
                        SCOPES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
