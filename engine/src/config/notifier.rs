//! `[notifier]`: where reminders go.

use serde::Deserialize;

use super::duration::default_timeout;
use super::ConfigDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    pub url: String,
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Signs notifications like cleaner calls, when set.
    pub secret: Option<String>,
}
