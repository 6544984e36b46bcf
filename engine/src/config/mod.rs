//! `lethe.toml`, typed and checked at start: a bad value fails with the key named.
//!
//! Precedence for the settings that can come from several places: command-line flag, then
//! environment variable (`LETHE_DATABASE_URL`, `LETHE_LISTEN`, `LETHE_CONFIG` through clap;
//! `LETHE_KAFKA_BROKERS` through [`Environment`]), then this file, then the built-in default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use lethe_domain::{CleanerName, DeadlineRule, Jurisdiction, RequestPolicy, RetryPolicy, Span};
use serde::{Deserialize, Deserializer};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./lethe-data/lethe.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_CONFIG_FILE: &str = "lethe.toml";
/// Kafka's bootstrap servers: replaces `[kafka] brokers`, and alone enables Kafka with the
/// defaults (ADR 17).
pub const KAFKA_BROKERS_ENV: &str = "LETHE_KAFKA_BROKERS";

/// The environment variables that change the config itself (clap reads the flags' own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// [`KAFKA_BROKERS_ENV`].
    pub kafka_brokers: Option<String>,
}

impl Environment {
    /// This process's environment.
    pub fn current() -> Result<Self, ConfigError> {
        let kafka_brokers = match std::env::var(KAFKA_BROKERS_ENV) {
            Ok(brokers) => Some(brokers),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ConfigError::Invalid {
                    key: KAFKA_BROKERS_ENV.to_owned(),
                    message: "is not valid UTF-8".to_owned(),
                })
            }
        };
        Ok(Self { kafka_brokers })
    }
}

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
    /// Where reminders go (the service that e-mails the subject); none: reminders are only
    /// recorded.
    pub notifier: Option<NotifierConfig>,
    #[serde(default)]
    pub cleaners: Vec<CleanerConfig>,
    /// The workflow's moving parts: how often workers look for work, lease lengths.
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub api: ApiConfig,
    /// How long the database may take to answer before a request is told it is unavailable.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Optional: without it Lethe runs with no broker at all.
    pub kafka: Option<crate::kafka::KafkaConfig>,
    /// API bearer tokens, stored as SHA-256 hashes. None configured: auth is off, and
    /// `serve` listens only on a loopback address.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    pub scopes: Vec<String>,
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
pub const SCOPES: [&str; 4] = ["requests:write", "requests:read", "audit:read", "admin"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    pub url: String,
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Signs notifications like cleaner calls, when set.
    pub secret: Option<String>,
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

/// What a cleaner is and what only its kind needs: `kind = "http"` carries `url` and `secret`,
/// `kind = "kafka"` and `kind = "manual"` carry nothing more. A key of another kind (a `url` on a
/// Kafka cleaner) is refused by serde, naming the key (ADR 21).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CleanerKind {
    Http(HttpCleanerConfig),
    Kafka(KafkaCleanerConfig),
    Manual(ManualCleanerConfig),
}

impl CleanerKind {
    /// The name in lethe.toml (`kind = "..."`), also the `kind` label of the cleaner metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Kafka(_) => "kafka",
            Self::Manual(_) => "manual",
        }
    }

    pub const fn is_http(&self) -> bool {
        matches!(self, Self::Http(_))
    }

    pub const fn is_kafka(&self) -> bool {
        matches!(self, Self::Kafka(_))
    }
}

/// [`CleanerKind`], with errors that say they are about it (serde's own for an unknown kind
/// name neither the key nor the line).
fn kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CleanerKind, D::Error> {
    CleanerKind::deserialize(deserializer)
        .map_err(|e| serde::de::Error::custom(format!("`kind` or its settings: {e}")))
}

/// `kind = "http"`: Lethe POSTs a signed call to the cleaner (docs/CLEANERS.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCleanerConfig {
    /// Where to POST.
    #[serde(deserialize_with = "url")]
    pub url: String,
    /// The HMAC key for the `Lethe-Signature` header.
    #[serde(deserialize_with = "secret")]
    pub secret: String,
}

// The kind's keys reach serde through `flatten`'s buffer, which loses their position: a wrong
// type names its key itself.
fn url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    text_named(deserializer, "url")
}

fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    text_named(deserializer, "secret")
}

fn text_named<'de, D: Deserializer<'de>>(deserializer: D, key: &str) -> Result<String, D::Error> {
    String::deserialize(deserializer).map_err(|e| serde::de::Error::custom(format!("`{key}`: {e}")))
}

/// `kind = "kafka"`: the cleaner reads `Due` from Kafka and answers on the results topic
/// (docs/KAFKA.md); the topics are `[kafka]`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaCleanerConfig {}

impl<'de> Deserialize<'de> for KafkaCleanerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        no_settings(deserializer, "kafka").map(|()| Self {})
    }
}

/// `kind = "manual"`: a person confirms the erasure through the result endpoint or the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualCleanerConfig {}

impl<'de> Deserialize<'de> for ManualCleanerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        no_settings(deserializer, "manual").map(|()| Self {})
    }
}

/// The keys left over for a kind that has no settings of its own: each is refused by name.
fn no_settings<'de, D: Deserializer<'de>>(deserializer: D, kind: &str) -> Result<(), D::Error> {
    let rest = BTreeMap::<String, serde::de::IgnoredAny>::deserialize(deserializer)?;
    match rest.keys().next() {
        None => Ok(()),
        Some(key) => Err(serde::de::Error::custom(format!(
            "unknown field `{key}`: a cleaner of kind = \"{kind}\" has no `{key}` \
             (`url` and `secret` are for kind = \"http\")"
        ))),
    }
}

/// One service that holds personal data and is told to erase it.
///
/// Not `deny_unknown_fields` itself: serde cannot combine that with `flatten`. Every key that is
/// not a common one goes to [`CleanerKind`], whose variants deny what they do not know, so a
/// misspelt key is still refused.
#[derive(Debug, Clone, Deserialize)]
pub struct CleanerConfig {
    pub name: CleanerName,
    /// `kind` and the settings only that kind has.
    #[serde(flatten, deserialize_with = "kind")]
    pub kind: CleanerKind,
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// How long a cleaner that answered 202 has to call back before the attempt fails.
    #[serde(default = "default_callback_timeout")]
    pub callback_timeout: ConfigDuration,
    /// Which requests this cleaner is told about; absent: every request.
    #[serde(rename = "match", default)]
    pub routing: RoutingRule,
    #[serde(default)]
    pub retry: RetryConfig,
    pub window: Option<WindowConfig>,
    pub max_in_flight: Option<u32>,
    pub rate_per_second: Option<f64>,
}

fn default_callback_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3600))
}

/// Selects requests by jurisdiction, source and tags; an absent list matches everything, and
/// a request must match every list given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    pub jurisdictions: Option<Vec<Jurisdiction>>,
    pub sources: Option<Vec<String>>,
    /// Matches when the request has at least one of these tags.
    pub tags: Option<Vec<String>>,
}

impl RoutingRule {
    pub fn matches(
        &self,
        jurisdiction: &Jurisdiction,
        source: Option<&str>,
        tags: &[String],
    ) -> bool {
        let jurisdiction_ok = self
            .jurisdictions
            .as_ref()
            .is_none_or(|list| list.contains(jurisdiction));
        let source_ok = self
            .sources
            .as_ref()
            .is_none_or(|list| source.is_some_and(|s| list.iter().any(|x| x == s)));
        let tags_ok = self
            .tags
            .as_ref()
            .is_none_or(|list| tags.iter().any(|t| list.contains(t)));
        jurisdiction_ok && source_ok && tags_ok
    }
}

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

/// A daily time-of-day window in a named time zone, e.g. 01:00–05:00 Europe/Berlin. A window
/// whose end is before its start spans midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    #[serde(deserialize_with = "time_of_day")]
    pub start: NaiveTime,
    #[serde(deserialize_with = "time_of_day")]
    pub end: NaiveTime,
    #[serde(deserialize_with = "time_zone")]
    pub tz: Tz,
}

fn time_of_day<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    NaiveTime::parse_from_str(&text, "%H:%M").map_err(|_| {
        serde::de::Error::custom(format!("{text:?} is not a time of day like \"01:30\""))
    })
}

fn time_zone<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse::<Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IANA time zone like \"Europe/Berlin\""
        ))
    })
}

impl WindowConfig {
    /// Whether `at` falls inside the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz).time();
        if self.start <= self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }

    /// The next moment at or after `at` that is inside the window.
    pub fn next_open(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        if self.contains(at) {
            return at;
        }
        let local = at.with_timezone(&self.tz);
        let mut day = local.date_naive();
        for _ in 0..3 {
            let candidate = day.and_time(self.start);
            // A start that falls into a DST gap moves to the first valid instant after it.
            let opening = self
                .tz
                .from_local_datetime(&candidate)
                .earliest()
                .or_else(|| {
                    self.tz
                        .from_local_datetime(&(candidate + chrono::TimeDelta::hours(1)))
                        .earliest()
                });
            if let Some(opening) = opening.map(|o| o.with_timezone(&Utc)) {
                if opening > at {
                    return opening;
                }
            }
            day = day.succ_opt().unwrap_or(day);
        }
        at
    }
}

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
    /// An open request whose deadline is this many days away or fewer is "at risk".
    #[serde(default = "default_at_risk_days")]
    pub at_risk_days: u32,
}

const fn default_at_risk_days() -> u32 {
    7
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            grace_period: default_grace_period(),
            reminders: default_reminders(),
            retention_after_completion: default_retention(),
            default_jurisdiction: default_jurisdiction(),
            at_risk_days: default_at_risk_days(),
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
            notifier: None,
            cleaners: Vec::new(),
            engine: EngineConfig::default(),
            api: ApiConfig::default(),
            database: DatabaseConfig::default(),
            kafka: None,
            tokens: Vec::new(),
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
            .with_builtin_jurisdictions();
        config.validate()?;
        Ok(config)
    }

    fn with_environment(mut self, environment: &Environment) -> Result<Self, ConfigError> {
        if let Some(brokers) = &environment.kafka_brokers {
            if brokers.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: KAFKA_BROKERS_ENV.to_owned(),
                    message: "is set but names no broker; unset it to run without Kafka".to_owned(),
                });
            }
            match &mut self.kafka {
                Some(kafka) => kafka.brokers.clone_from(brokers),
                None => self.kafka = Some(crate::kafka::KafkaConfig::with_brokers(brokers.clone())),
            }
        }
        Ok(self)
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
            return Err(invalid(
                "policy.grace_period".into(),
                "must be longer than zero",
            ));
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
        if let Some(kafka) = &self.kafka {
            if kafka.brokers.trim().is_empty() {
                return Err(invalid(
                    "kafka.brokers".into(),
                    &format!("must name at least one broker (here or in {KAFKA_BROKERS_ENV})"),
                ));
            }
            for (event_type, topic) in &kafka.publish {
                if !lethe_domain::event::EVENT_TYPES.contains(&event_type.as_str()) {
                    return Err(invalid(
                        format!("kafka.publish.{event_type}"),
                        &format!(
                            "is not an event type; use {}",
                            lethe_domain::event::EVENT_TYPES.join(", ")
                        ),
                    ));
                }
                if topic.trim().is_empty() {
                    return Err(invalid(
                        format!("kafka.publish.{event_type}"),
                        "names no topic",
                    ));
                }
            }
            for (key, topic) in [
                ("kafka.results_topic", &kafka.results_topic),
                ("kafka.dead_letter_topic", &kafka.dead_letter_topic),
            ] {
                if topic.trim().is_empty() {
                    return Err(invalid(key.into(), "names no topic"));
                }
            }
        }
        if let Some(notifier) = &self.notifier {
            check_url("notifier.url", &notifier.url)?;
        }
        for (key, duration) in [
            ("database.acquire_timeout", self.database.acquire_timeout),
            ("database.ready_timeout", self.database.ready_timeout),
        ] {
            if duration.0.is_zero() {
                return Err(invalid(key.into(), "must be longer than zero"));
            }
        }
        if self.api.body_idle_timeout.is_some_and(|d| d.0.is_zero()) {
            return Err(invalid(
                "api.body_idle_timeout".into(),
                "must be longer than zero",
            ));
        }
        if self.api.rate_per_second == Some(0) {
            return Err(invalid("api.rate_per_second".into(), "must be at least 1"));
        }
        for (i, token) in self.tokens.iter().enumerate() {
            let key = |field: &str| format!("tokens[{i}].{field}");
            let hex_ok = token.sha256.len() == 64
                && token
                    .sha256
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
            if !hex_ok {
                return Err(invalid(
                    key("sha256"),
                    "must be 64 lowercase hex characters (lethe token create prints it)",
                ));
            }
            if token.name.trim().is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            for (j, scope) in token.scopes.iter().enumerate() {
                let known = SCOPES.contains(&scope.as_str())
                    || scope
                        .strip_prefix("cleaner:")
                        .is_some_and(|name| CleanerName::parse(name).is_ok());
                if !known {
                    return Err(invalid(
                        format!("tokens[{i}].scopes[{j}]"),
                        &format!(
                            "{scope:?} is not a scope; use {}, or cleaner:<name>",
                            SCOPES.join(", ")
                        ),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, cleaner) in self.cleaners.iter().enumerate() {
            let key = |field: &str| format!("cleaners[{i}].{field}");
            if !names.insert(&cleaner.name) {
                return Err(invalid(
                    key("name"),
                    &format!("{} is configured twice", cleaner.name),
                ));
            }
            match &cleaner.kind {
                CleanerKind::Http(http) => {
                    check_url(&key("url"), &http.url)?;
                    if http.secret.is_empty() {
                        return Err(invalid(key("secret"), "is required for kind = \"http\""));
                    }
                }
                CleanerKind::Kafka(_) => {
                    let due_published = self
                        .kafka
                        .as_ref()
                        .is_some_and(|k| k.publish.contains_key("Due"));
                    if !due_published {
                        return Err(invalid(
                            key("kind"),
                            &format!(
                                "\"kafka\" cleaners need Kafka enabled ([kafka] or \
                                 {KAFKA_BROKERS_ENV}) and publishing Due"
                            ),
                        ));
                    }
                }
                CleanerKind::Manual(_) => {}
            }
            cleaner
                .retry
                .policy()
                .validate(&key("retry"))
                .map_err(|e| ConfigError::Invalid {
                    key: e.field,
                    message: e.message,
                })?;
            if cleaner.max_in_flight == Some(0) {
                return Err(invalid(key("max_in_flight"), "must be at least 1"));
            }
            if cleaner
                .rate_per_second
                .is_some_and(|r| !(r.is_finite() && r > 0.0))
            {
                return Err(invalid(key("rate_per_second"), "must be a number above 0"));
            }
            if let Some(list) = &cleaner.routing.jurisdictions {
                if let Some(unknown) = list.iter().find(|j| !self.jurisdictions.contains_key(*j)) {
                    return Err(invalid(
                        key("match.jurisdictions"),
                        &format!("{unknown} is not a configured jurisdiction"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn cleaner(&self, name: &CleanerName) -> Option<&CleanerConfig> {
        self.cleaners.iter().find(|c| &c.name == name)
    }

    /// The policy for a new request under `jurisdiction`, or `None` if it is not configured.
    pub fn request_policy(&self, jurisdiction: &Jurisdiction) -> Option<RequestPolicy> {
        let rule = self.jurisdictions.get(jurisdiction)?;
        let delta =
            |d: &ConfigDuration| chrono::TimeDelta::from_std(d.0).unwrap_or(chrono::TimeDelta::MAX);
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

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => Err(ConfigError::Invalid {
            key: key.to_owned(),
            message: format!("{url:?} is not an http(s) URL"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
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

    #[test]
    fn a_policy_with_an_extra_jurisdiction_parses() {
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
    fn cleaners_parse_as_documented() {
        let config = Config::parse(
            r#"
            [notifier]
            url = "http://127.0.0.1:9000/notify"
            [[cleaners]]
            name = "billing"
            kind = "http"
            url = "http://127.0.0.1:9101/erase"
            secret = "s3cret"
            timeout = "10s"
            match = { jurisdictions = ["gdpr", "ccpa"] }
            retry = { max_attempts = 8, initial = "1m", max = "6h", multiplier = 2.0 }
            window = { start = "01:00", end = "05:00", tz = "Europe/Berlin" }
            max_in_flight = 4
            rate_per_second = 10
            [[cleaners]]
            name = "archive"
            kind = "manual"
            match = { tags = ["archive"] }
            "#,
        )
        .unwrap();
        let billing = config
            .cleaner(&CleanerName::parse("billing").unwrap())
            .unwrap();
        assert_eq!(billing.retry.policy().max_attempts, 8);
        assert_eq!(billing.retry.policy().initial, Duration::from_secs(60));
        assert_eq!(billing.max_in_flight, Some(4));
        let gdpr = Jurisdiction::parse("gdpr").unwrap();
        let archive = config
            .cleaner(&CleanerName::parse("archive").unwrap())
            .unwrap();
        assert!(billing.routing.matches(&gdpr, None, &[]));
        assert!(!archive.routing.matches(&gdpr, None, &[]));
        assert!(archive
            .routing
            .matches(&gdpr, None, &["x".into(), "archive".into()]));
    }

    #[test]
    fn each_kind_carries_its_own_settings() {
        let env = Environment {
            kafka_brokers: Some("b:9092".to_owned()),
        };
        let config = Config::parse_with(
            r#"
            [[cleaners]]
            name = "billing"
            kind = "http"
            url = "https://billing.internal/erase"
            secret = "whsec"
            [[cleaners]]
            name = "search"
            kind = "kafka"
            callback_timeout = "1h"
            [[cleaners]]
            name = "archive"
            kind = "manual"
            "#,
            &env,
        )
        .unwrap();
        let kinds: Vec<&CleanerKind> = config.cleaners.iter().map(|c| &c.kind).collect();
        assert_eq!(
            kinds,
            [
                &CleanerKind::Http(HttpCleanerConfig {
                    url: "https://billing.internal/erase".to_owned(),
                    secret: "whsec".to_owned(),
                }),
                &CleanerKind::Kafka(KafkaCleanerConfig {}),
                &CleanerKind::Manual(ManualCleanerConfig {}),
            ]
        );
        let labels: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels, ["http", "kafka", "manual"]);
        assert_eq!(
            config.cleaners[1].callback_timeout.0,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn a_key_of_another_kind_or_a_missing_one_is_refused_by_name() {
        let env = Environment {
            kafka_brokers: Some("b:9092".to_owned()),
        };
        let http = "[[cleaners]]\nname = \"billing\"\nkind = \"http\"\n";
        let cases = [
            (format!("{http}secret = \"s\""), "missing field `url`"),
            (
                format!("{http}url = \"http://x\""),
                "missing field `secret`",
            ),
            (
                format!("{http}url = \"http://x\"\nsecret = \"\""),
                "cleaners[0].secret",
            ),
            (
                format!("{http}url = \"http://x\"\nsecret = \"s\"\nurll = \"x\""),
                "unknown field `urll`",
            ),
            (
                format!("{http}url = 5\nsecret = \"s\""),
                "`url`: invalid type",
            ),
            (
                "[[cleaners]]\nname = \"search\"\nkind = \"kafka\"\nurl = \"http://x\"".to_owned(),
                "unknown field `url`: a cleaner of kind = \"kafka\"",
            ),
            (
                "[[cleaners]]\nname = \"a\"\nkind = \"manual\"\nsecret = \"s\"".to_owned(),
                "unknown field `secret`: a cleaner of kind = \"manual\"",
            ),
            (
                "[[cleaners]]\nname = \"a\"\nkind = \"manual\"\ntimeot = \"1s\"".to_owned(),
                "unknown field `timeot`",
            ),
            (
                "[[cleaners]]\nname = \"a\"".to_owned(),
                "missing field `kind`",
            ),
        ];
        for (text, wanted) in cases {
            let message = Config::parse_with(&text, &env).unwrap_err().to_string();
            assert!(message.contains(wanted), "{text:?} gave {message:?}");
        }
    }

    #[test]
    fn windows_open_and_close_in_their_time_zone() {
        use chrono::TimeZone as _;
        let window = WindowConfig {
            start: NaiveTime::from_hms_opt(1, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(5, 0, 0).unwrap(),
            tz: chrono_tz::Europe::Berlin,
        };
        // 01:30 in Berlin in winter is 00:30 UTC.
        let inside = Utc.with_ymd_and_hms(2025, 1, 10, 0, 30, 0).unwrap();
        assert!(window.contains(inside));
        assert_eq!(window.next_open(inside), inside);
        let after = Utc.with_ymd_and_hms(2025, 1, 10, 12, 0, 0).unwrap();
        assert!(!window.contains(after));
        assert_eq!(
            window.next_open(after),
            Utc.with_ymd_and_hms(2025, 1, 11, 0, 0, 0).unwrap()
        );
        // Summer time: 01:00 Berlin is 23:00 UTC the day before.
        let summer = Utc.with_ymd_and_hms(2025, 7, 10, 12, 0, 0).unwrap();
        assert_eq!(
            window.next_open(summer),
            Utc.with_ymd_and_hms(2025, 7, 10, 23, 0, 0).unwrap()
        );
        // A window across midnight.
        let night = WindowConfig {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            tz: chrono_tz::UTC,
        };
        assert!(night.contains(Utc.with_ymd_and_hms(2025, 1, 10, 23, 0, 0).unwrap()));
        assert!(night.contains(Utc.with_ymd_and_hms(2025, 1, 10, 1, 0, 0).unwrap()));
        assert!(!night.contains(Utc.with_ymd_and_hms(2025, 1, 10, 3, 0, 0).unwrap()));
    }

    #[test]
    fn kafka_brokers_from_the_environment_enable_kafka_with_the_defaults() {
        let env = Environment {
            kafka_brokers: Some("k1:9092,k2:9092".to_owned()),
        };
        let kafka = Config::parse_with("", &env).unwrap().kafka.unwrap();
        assert_eq!(kafka.brokers, "k1:9092,k2:9092");
        let defaults = Config::parse("[kafka]\nbrokers = \"b:9092\"")
            .unwrap()
            .kafka
            .unwrap();
        assert_eq!(kafka.publish, defaults.publish);
        assert_eq!(kafka.results_topic, defaults.results_topic);
        assert_eq!(kafka.dead_letter_topic, defaults.dead_letter_topic);
        // It replaces the file's brokers and keeps the rest of the section.
        let kafka = Config::parse_with(
            "[kafka]\nbrokers = \"old:9092\"\npublish = { Due = \"erase\" }",
            &env,
        )
        .unwrap()
        .kafka
        .unwrap();
        assert_eq!(kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(kafka.publish.len(), 1);
        assert_eq!(kafka.publish["Due"], "erase");
        // The file may leave the brokers to the environment, and a Kafka cleaner needs nothing
        // more; without the environment both are refused, naming the variable.
        for text in [
            "[kafka]\nresults_topic = \"results\"",
            "[[cleaners]]\nname = \"search\"\nkind = \"kafka\"",
        ] {
            assert!(Config::parse_with(text, &env).unwrap().kafka.is_some());
            let message = Config::parse(text).unwrap_err().to_string();
            assert!(message.contains(KAFKA_BROKERS_ENV), "{message}");
        }
        assert!(Config::parse_with("", &Environment::default())
            .unwrap()
            .kafka
            .is_none());
        for blank in ["", "  "] {
            let env = Environment {
                kafka_brokers: Some(blank.to_owned()),
            };
            let message = Config::parse_with("", &env).unwrap_err().to_string();
            assert!(message.contains(KAFKA_BROKERS_ENV), "{message}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[policy]\ngrace_period = \"soon\"", "grace_period"),
            ("[policy]\ngrace_period = 30", "grace_period"),
            ("[policy]\nreminders = [\"40d\"]", "policy.reminders[0]"),
            ("[policy]\ngrase_period = \"1d\"", "grase_period"),
            (
                "[jurisdictions.gdpr]\ndeadline = \"a month\"\nmax_extension = \"1d\"",
                "deadline",
            ),
            (
                "[policy]\ndefault_jurisdiction = \"lgpd\"",
                "policy.default_jurisdiction",
            ),
            ("[log]\nformat = \"xml\"", "format"),
            ("[[cleaners]]\nname = \"billing\"\nkind = \"http\"", "missing field `url`"),
            (
                "[[cleaners]]\nname = \"billing\"\nkind = \"http\"\nurl = \"ftp://x\"\nsecret = \"s\"",
                "cleaners[0].url",
            ),
            (
                "[[cleaners]]\nname = \"billing\"\nkind = \"smtp\"",
                "`kind` or its settings: unknown variant `smtp`",
            ),
            ("[[cleaners]]\nname = \"Billing\"\nkind = \"manual\"", "name"),
            (
                "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\nretry = { max_attempts = 0 }",
                "cleaners[0].retry.max_attempts",
            ),
            (
                "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\nmatch = { jurisdictions = [\"lgpd\"] }",
                "cleaners[0].match.jurisdictions",
            ),
            (
                "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\nwindow = { start = \"1am\", end = \"05:00\", tz = \"UTC\" }",
                "start",
            ),
            (
                "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\nwindow = { start = \"01:00\", end = \"05:00\", tz = \"Mars/Olympus\" }",
                "tz",
            ),
            (
                "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\n[[cleaners]]\nname = \"crm\"\nkind = \"manual\"",
                "cleaners[1].name",
            ),
            ("[kafka]\nbrokers = \"b:9092\"\npublish = { Doo = \"t\" }", "kafka.publish.Doo"),
            ("[kafka]\nbrokers = \"\"", "kafka.brokers"),
            (
                "[kafka]\nbrokers = \"b:9092\"\nresults_topic = \" \"",
                "kafka.results_topic",
            ),
            (
                "[kafka]\nbrokers = \"b:9092\"\ndead_letter_topic = \"\"",
                "kafka.dead_letter_topic",
            ),
        ];
        for (text, key) in cases {
            let message = Config::parse(text).unwrap_err().to_string();
            assert!(message.contains(key), "{text:?} gave {message:?}");
        }
    }
}
