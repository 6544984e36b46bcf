//! `lethe.toml`, typed and checked at start: a bad value fails with the key named.
//!
//! Precedence for the settings that can come from several places: command-line flag, then
//! environment variable (`LETHE_DATABASE_URL`, `LETHE_LISTEN`, `LETHE_CONFIG` through clap;
//! `LETHE_KAFKA_BROKERS` through [`Environment`]), then this file, then the built-in default.
//!
//! One file per section; each section's type checks its own keys, and `Config::validate`
//! (`validate.rs`) runs those checks. This layer imports nothing else of the engine.

mod api;
mod cleaners;
mod database;
mod duration;
mod engine;
mod environment;
mod error;
mod kafka;
mod log;
mod notifier;
mod policy;
mod retry;
mod routing;
mod secret;
mod stores;
mod suppression;
mod validate;
mod window;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lethe_domain::{CleanerName, DeadlineRule, Jurisdiction, RequestPolicy};
use serde::Deserialize;

pub use api::{token_hash, ApiConfig, TokenConfig, SCOPES};
pub use cleaners::{
    BatchConfig, CleanerConfig, CleanerKind, HttpCleanerConfig, KafkaCleanerConfig,
    ManualCleanerConfig, ObjectStoreCleanerConfig, PartitionKey, RedisCleanerConfig,
    SqlCleanerConfig,
};
pub use cleaners::{KeyTemplate, KeysFromConfig, TemplatePart};
pub use cleaners::{RedisHashField, RedisTemplate, REDIS_GLOB_CHARACTERS};
pub use database::DatabaseConfig;
pub use duration::ConfigDuration;
pub use engine::EngineConfig;
pub use environment::{Environment, KAFKA_BROKERS_ENV};
pub use error::ConfigError;
pub use kafka::KafkaConfig;
pub use log::{LogConfig, LogFormat};
pub use notifier::NotifierConfig;
pub use policy::{Approval, JurisdictionConfig, PolicyConfig, SourceConfig};
pub use retry::RetryConfig;
pub use routing::RoutingRule;
pub use secret::SecretSource;
pub use stores::StoreConfig;
pub use suppression::SuppressionConfig;
pub use window::WindowConfig;

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
    /// Rules for requests from one `source` (the submission's field), over the jurisdiction's.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Where reminders go (the service that e-mails the subject); none: reminders are only
    /// recorded.
    pub notifier: Option<NotifierConfig>,
    #[serde(default)]
    pub cleaners: Vec<CleanerConfig>,
    /// The data inventory: where personal data lives and which cleaners erase it.
    #[serde(default)]
    pub stores: Vec<StoreConfig>,
    /// The workflow's moving parts: how often workers look for work, lease lengths.
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub api: ApiConfig,
    /// How long the database may take to answer before a request is told it is unavailable.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Optional: without it Lethe runs with no broker at all.
    pub kafka: Option<KafkaConfig>,
    /// API bearer tokens, stored as SHA-256 hashes. None configured: auth is off, and
    /// `serve` listens only on a loopback address.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Opt-in: keyed hashes of completed requests' identifiers, for `suppressions:check`.
    pub suppression: Option<SuppressionConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            listen: None,
            log: LogConfig::default(),
            policy: PolicyConfig::default(),
            jurisdictions: BTreeMap::new(),
            sources: BTreeMap::new(),
            notifier: None,
            cleaners: Vec::new(),
            stores: Vec::new(),
            engine: EngineConfig::default(),
            api: ApiConfig::default(),
            database: DatabaseConfig::default(),
            kafka: None,
            tokens: Vec::new(),
            suppression: None,
        }
        .with_builtin_jurisdictions()
    }
}

impl Config {
    /// Loads `path` if given (it must exist), else `./lethe.toml` if present, else defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, &Environment::default())
    }

    /// [`Config::load`], with `environment` applied over the file before the checks.
    pub fn load_with(path: Option<&Path>, environment: &Environment) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse_with(&text, environment).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path, message },
            other => other,
        })
    }

    /// Parses and checks the text of a config file.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_with(text, &Environment::default())
    }

    /// [`Config::parse`], with `environment` applied over the text before the checks.
    pub fn parse_with(text: &str, environment: &Environment) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from(DEFAULT_CONFIG_FILE),
            message: e.to_string(),
        })?;
        let config = config
            .with_environment(environment)?
            .resolve_secrets()?
            .with_builtin_jurisdictions();
        config.validate()?;
        Ok(config)
    }

    pub fn cleaner(&self, name: &CleanerName) -> Option<&CleanerConfig> {
        self.cleaners.iter().find(|c| &c.name == name)
    }

    /// The policy for a new request under `jurisdiction`, or `None` if it is not configured.
    /// Approval is required when `[sources.<source>]`, else `[jurisdictions.<jurisdiction>]`,
    /// else `[policy]` says so.
    pub fn request_policy(
        &self,
        jurisdiction: &Jurisdiction,
        source: Option<&str>,
    ) -> Option<RequestPolicy> {
        let rule = self.jurisdictions.get(jurisdiction)?;
        let required = source
            .and_then(|s| self.sources.get(s))
            .and_then(|s| s.approval)
            .or(rule.approval)
            .unwrap_or(self.policy.approval)
            == Approval::Required;
        Some(self.grace_policy(
            DeadlineRule {
                base: rule.deadline,
                max_extension: rule.max_extension,
            },
            required,
        ))
    }

    /// `[policy]`'s grace period and reminders with `deadline`: what an approval starts.
    pub fn grace_policy(&self, deadline: DeadlineRule, approval_required: bool) -> RequestPolicy {
        let delta =
            |d: &ConfigDuration| chrono::TimeDelta::from_std(d.0).unwrap_or(chrono::TimeDelta::MAX);
        RequestPolicy {
            grace_period: delta(&self.policy.grace_period),
            reminders: self.policy.reminders.iter().map(delta).collect(),
            deadline,
            approval_required,
        }
    }
}
