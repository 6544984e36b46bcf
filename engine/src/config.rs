//! `lethe.toml`, typed and checked at start: a bad value fails with the key named.
//!
//! Precedence for the settings that can come from several places: command-line flag, then
//! environment variable (`LETHE_DATABASE_URL`, `LETHE_LISTEN`, `LETHE_CONFIG`), then this file,
//! then the built-in default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lethe_domain::{DeadlineRule, Jurisdiction, RequestPolicy, Span};
use serde::{Deserialize, Deserializer};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./lethe-data/lethe.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_CONFIG_FILE: &str = "lethe.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Overridden by `--database-url` and `LETHE_DATABASE_URL`.
    pub database_url: Option<String>,
    /// Overridden by `--listen` and `LETHE_LISTEN`.
    pub listen: Option<String>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Merged over the built-in `gdpr` and `ccpa` rules.
    #[serde(default)]
    pub jurisdictions: BTreeMap<Jurisdiction, JurisdictionConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_grace_period")]
    pub grace_period: ConfigDuration,
    /// Offsets before the end of the grace period.
    #[serde(default = "default_reminders")]
    pub reminders: Vec<ConfigDuration>,
    #[serde(default = "default_retention")]
    pub retention_after_completion: ConfigDuration,
    /// For submissions that name no jurisdiction.
    #[serde(default = "default_jurisdiction")]
    pub default_jurisdiction: Jurisdiction,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            grace_period: default_grace_period(),
            reminders: default_reminders(),
            retention_after_completion: default_retention(),
            default_jurisdiction: default_jurisdiction(),
        }
    }
}

const DAY: u64 = 24 * 3600;

fn default_grace_period() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30 * DAY))
}

fn default_reminders() -> Vec<ConfigDuration> {
    vec![
        ConfigDuration(Duration::from_secs(7 * DAY)),
        ConfigDuration(Duration::from_secs(DAY)),
    ]
}

fn default_retention() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(730 * DAY))
}

fn default_jurisdiction() -> Jurisdiction {
    Jurisdiction::parse("gdpr").unwrap_or_else(|e| unreachable!("{e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JurisdictionConfig {
    #[serde(deserialize_with = "span")]
    pub deadline: Span,
    #[serde(deserialize_with = "span")]
    pub max_extension: Span,
}

fn span<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// A duration written as in the contract: `"30d"`, `"12h"`, `"2s"`, `"1h 30m"`.
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {key}: {message}")]
    Invalid { key: String, message: String },
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            listen: None,
            log: LogConfig::default(),
            policy: PolicyConfig::default(),
            jurisdictions: BTreeMap::new(),
        }
        .with_builtin_jurisdictions()
    }
}

impl Config {
    /// Loads `path` if given (it must exist), else `./lethe.toml` if present, else defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|e| match e {
                ConfigError::Parse { message, .. } => ConfigError::Parse { path, message },
                other => other,
            }),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses and checks the text of a config file.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from(DEFAULT_CONFIG_FILE),
            message: e.to_string(),
        })?;
        let config = config.with_builtin_jurisdictions();
        config.validate()?;
        Ok(config)
    }

    fn with_builtin_jurisdictions(mut self) -> Self {
        for (name, rule) in [("gdpr", DeadlineRule::GDPR), ("ccpa", DeadlineRule::CCPA)] {
            let name = Jurisdiction::parse(name).unwrap_or_else(|e| unreachable!("{e}"));
            self.jurisdictions
                .entry(name)
                .or_insert(JurisdictionConfig {
                    deadline: rule.base,
                    max_extension: rule.max_extension,
                });
        }
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        if self.policy.grace_period.0.is_zero() {
            return Err(invalid("policy.grace_period".into(), "must be longer than zero"));
        }
        for (i, reminder) in self.policy.reminders.iter().enumerate() {
            if reminder.0 >= self.policy.grace_period.0 || reminder.0.is_zero() {
                return Err(invalid(
                    format!("policy.reminders[{i}]"),
                    "must be longer than zero and shorter than policy.grace_period",
                ));
            }
        }
        if !self
            .jurisdictions
            .contains_key(&self.policy.default_jurisdiction)
        {
            return Err(invalid(
                "policy.default_jurisdiction".into(),
                "names no configured jurisdiction",
            ));
        }
        for (name, rule) in &self.jurisdictions {
            if rule.deadline.is_zero() {
                return Err(invalid(
                    format!("jurisdictions.{name}.deadline"),
                    "must be at least one day",
                ));
            }
        }
        Ok(())
    }

    /// The policy for a new request under `jurisdiction`, or `None` if it is not configured.
    pub fn request_policy(&self, jurisdiction: &Jurisdiction) -> Option<RequestPolicy> {
        let rule = self.jurisdictions.get(jurisdiction)?;
        let delta = |d: &ConfigDuration| chrono::TimeDelta::from_std(d.0).unwrap_or(chrono::TimeDelta::MAX);
        Some(RequestPolicy {
            grace_period: delta(&self.policy.grace_period),
            reminders: self.policy.reminders.iter().map(delta).collect(),
            deadline: DeadlineRule {
                base: rule.deadline,
                max_extension: rule.max_extension,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_contract_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.policy.grace_period.0, Duration::from_secs(30 * DAY));
        let gdpr = Jurisdiction::parse("gdpr").unwrap();
        let policy = config.request_policy(&gdpr).unwrap();
        assert_eq!(policy.deadline, DeadlineRule::GDPR);
        assert_eq!(policy.reminders.len(), 2);
        assert!(config
            .request_policy(&Jurisdiction::parse("ccpa").unwrap())
            .is_some());
        assert!(config
            .request_policy(&Jurisdiction::parse("lgpd").unwrap())
            .is_none());
    }

    #[test]
    fn the_contract_example_parses() {
        let config = Config::parse(
            r#"
            [policy]
            grace_period = "2s"
            reminders = ["1s"]
            retention_after_completion = "730d"
            [jurisdictions.gdpr]
            deadline = "1 month"
            max_extension = "2 months"
            [jurisdictions.lgpd]
            deadline = "15d"
            max_extension = "0d"
            "#,
        )
        .unwrap();
        assert_eq!(config.policy.grace_period.0, Duration::from_secs(2));
        let lgpd = config
            .request_policy(&Jurisdiction::parse("lgpd").unwrap())
            .unwrap();
        assert_eq!(lgpd.deadline.base, Span::days(15));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[policy]\ngrace_period = \"soon\"", "grace_period"),
            ("[policy]\ngrace_period = 30", "grace_period"),
            ("[policy]\nreminders = [\"40d\"]", "policy.reminders[0]"),
            ("[policy]\ngrase_period = \"1d\"", "grase_period"),
            ("[jurisdictions.gdpr]\ndeadline = \"a month\"\nmax_extension = \"1d\"", "deadline"),
            ("[policy]\ndefault_jurisdiction = \"lgpd\"", "policy.default_jurisdiction"),
            ("[log]\nformat = \"xml\"", "format"),
        ];
        for (text, key) in cases {
            let message = Config::parse(text).unwrap_err().to_string();
            assert!(message.contains(key), "{text:?} gave {message:?}");
        }
    }
}
