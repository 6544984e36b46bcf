//! The checks serde cannot make, run once the file is parsed and the environment applied:
//! ranges and references between sections. Each section checks its own keys; this runs them
//! in the order of the file's documentation and stops at the first bad value.

use super::cleaners::check_cleaners;
use super::stores::check_stores;
use super::{Config, ConfigError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.policy.check(&self.jurisdictions)?;
        if let Some(kafka) = &self.kafka {
            kafka.check()?;
        }
        if let Some(notifier) = &self.notifier {
            check_url("notifier.url", &notifier.url)?;
        }
        self.database.check()?;
        self.api.check()?;
        for (i, token) in self.tokens.iter().enumerate() {
            token.check(i)?;
        }
        if let Some(suppression) = &self.suppression {
            suppression.check()?;
        }
        check_cleaners(&self.cleaners, self.kafka.as_ref(), &self.jurisdictions)?;
        check_stores(&self.stores, &self.cleaners)
    }
}

/// The error for a bad value at `key`.
pub(in crate::config) fn invalid(
    key: impl Into<String>,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// `url` must be an absolute http(s) URL.
pub(in crate::config) fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => Err(invalid(key, format!("{url:?} is not an http(s) URL"))),
    }
}

/// Every name in `kinds` must be an identifier kind as subjects write them.
pub(in crate::config) fn check_identifier_kinds<'a>(
    key: &str,
    mut kinds: impl Iterator<Item = &'a String>,
) -> Result<(), ConfigError> {
    match kinds.find(|kind| !lethe_domain::subject::is_identifier_kind(kind)) {
        None => Ok(()),
        Some(bad) => Err(invalid(
            key,
            format!(
                "{bad:?} is not an identifier kind (lowercase letters, digits and `_`, \
                 starting with a letter, at most 32)"
            ),
        )),
    }
}
