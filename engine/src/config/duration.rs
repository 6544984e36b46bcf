//! Durations as `lethe.toml` writes them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration as docs/OPERATIONS.md writes them: `"30d"`, `"12h"`, `"2s"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Self).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"30d\", \"12h\" or \"2s\""
            ))
        })
    }
}

/// A cleaner's or the notifier's call time-out when none is given.
pub(super) fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
