//! `[notifier]`: where reminders go.

use std::path::PathBuf;

use serde::Deserialize;

use super::duration::default_timeout;
use super::ConfigDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    pub url: String,
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Signs notifications like cleaner calls, when set: written here, or (better) named by
    /// `secret_env` / `secret_file` and read into this field when the configuration loads.
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
}
