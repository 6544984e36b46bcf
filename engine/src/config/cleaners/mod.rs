//! `[[cleaners]]`: the services and stores erased, each with its kind's own settings (ADR 21):
//! one file per kind that has settings (`sql.rs`, `object_store.rs`, `redis.rs`), the settings
//! every kind shares here (`order.rs` checks `after`, `batch.rs` is `batch`).

mod batch;
mod kafka;
mod key_template;
mod object_store;
mod order;
mod redis;
mod sql;

pub use batch::BatchConfig;
pub use kafka::{KafkaCleanerConfig, PartitionKey};
pub use key_template::{KeyTemplate, TemplatePart};
pub use object_store::{KeysFromConfig, ObjectStoreCleanerConfig};
pub use redis::{RedisCleanerConfig, RedisHashField, RedisTemplate, REDIS_GLOB_CHARACTERS};
pub use sql::SqlCleanerConfig;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use lethe_domain::{CleanerName, Jurisdiction};
use serde::{Deserialize, Deserializer};

use super::{
    ConfigDuration, ConfigError, JurisdictionConfig, KafkaConfig, RetryConfig, RoutingRule,
    SecretSource, WindowConfig,
};
use crate::config::duration::default_timeout;
use crate::config::validate::{check_identifier_kinds, check_url, invalid};

/// What a cleaner is and what only its kind needs: `kind = "http"` carries `url` and `secret`,
/// `kind = "kafka"` and `kind = "manual"` carry nothing more. A key of another kind (a `url` on a
/// Kafka cleaner) is refused by serde, naming the key (ADR 21).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CleanerKind {
    Http(HttpCleanerConfig),
    Kafka(KafkaCleanerConfig),
    Manual(ManualCleanerConfig),
    /// Lethe runs SQL statements against a database itself.
    Sql(SqlCleanerConfig),
    /// Lethe deletes objects from an S3-compatible store itself.
    ObjectStore(ObjectStoreCleanerConfig),
    /// Lethe deletes keys and hash fields from Redis itself.
    Redis(RedisCleanerConfig),
}

impl CleanerKind {
    /// The name in lethe.toml (`kind = "..."`), also the `kind` label of the cleaner metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Kafka(_) => "kafka",
            Self::Manual(_) => "manual",
            Self::Sql(_) => "sql",
            Self::ObjectStore(_) => "object_store",
            Self::Redis(_) => "redis",
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
    /// The HMAC key for the `Lethe-Signature` header: written here, or (better) named by
    /// `secret_env` / `secret_file` and read into this field when the configuration loads.
    #[serde(default, deserialize_with = "secret")]
    pub secret: String,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

impl HttpCleanerConfig {
    /// Where the secret is, when it is not written inline.
    pub fn secret_source(&self) -> SecretSource {
        SecretSource::new(self.secret_env.as_deref(), self.secret_file.as_deref())
    }
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
    /// Which of the subject's identifiers this cleaner receives (data minimisation); absent:
    /// every identifier of the subject. Whatever its kind, a cleaner sees no other.
    pub identifiers: Option<BTreeSet<String>>,
    /// Cleaners of the same request that must have succeeded or been skipped before this one
    /// is called (a cleaner the request is not routed to does not hold it back).
    #[serde(default)]
    pub after: Vec<CleanerName>,
    /// Due requests collected and sent to the cleaner together, in one call.
    pub batch: Option<BatchConfig>,
}

impl CleanerConfig {
    /// The identifiers of `subject` this cleaner may receive.
    pub fn identifiers_of(&self, subject: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match &self.identifiers {
            None => subject.clone(),
            Some(wanted) => subject
                .iter()
                .filter(|(kind, _)| wanted.contains(*kind))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

fn default_callback_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3600))
}

/// Checks every `cleaners[i]`: names are unique, and each one's settings (against `[kafka]`
/// and the configured jurisdictions).
pub(super) fn check_cleaners(
    cleaners: &[CleanerConfig],
    kafka: Option<&KafkaConfig>,
    jurisdictions: &BTreeMap<Jurisdiction, JurisdictionConfig>,
) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (i, cleaner) in cleaners.iter().enumerate() {
        if !names.insert(&cleaner.name) {
            return Err(invalid(
                format!("cleaners[{i}].name"),
                format!("{} is configured twice", cleaner.name),
            ));
        }
        cleaner.check(i, kafka, jurisdictions)?;
    }
    kafka::check_own_topics_distinct(cleaners.iter().enumerate().map(|(i, c)| match &c.kind {
        CleanerKind::Kafka(settings) => (i, settings.topic.clone()),
        _ => (i, None),
    }))?;
    order::check_after(cleaners)
}

impl CleanerConfig {
    /// Checks `cleaners[index]`.
    fn check(
        &self,
        index: usize,
        kafka: Option<&KafkaConfig>,
        jurisdictions: &BTreeMap<Jurisdiction, JurisdictionConfig>,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("cleaners[{index}].{field}");
        match &self.kind {
            CleanerKind::Http(http) => {
                check_url(&key("url"), &http.url)?;
                if http.secret.is_empty() {
                    return Err(invalid(
                        key("secret"),
                        "is required for kind = \"http\" (as secret_env or secret_file, or \
                         inline)",
                    ));
                }
            }
            CleanerKind::Kafka(settings) => {
                settings.check(&key, self.identifiers.as_ref(), self.batch.as_ref(), kafka)?;
            }
            CleanerKind::Manual(_) => {}
            CleanerKind::Sql(sql) => sql.check(&key)?,
            CleanerKind::ObjectStore(store) => store.check(&key)?,
            CleanerKind::Redis(redis) => redis.check(&key)?,
        }
        if let Some(identifiers) = &self.identifiers {
            if identifiers.is_empty() {
                return Err(invalid(
                    key("identifiers"),
                    "must name at least one identifier kind (leave it out for all of them)",
                ));
            }
            check_identifier_kinds(&key("identifiers"), identifiers.iter())?;
        }
        if let Some(batch) = &self.batch {
            batch.check(&key("batch"))?;
        }
        self.retry
            .policy()
            .validate(&key("retry"))
            .map_err(|e| invalid(e.field, e.message))?;
        if self.max_in_flight == Some(0) {
            return Err(invalid(key("max_in_flight"), "must be at least 1"));
        }
        if self
            .rate_per_second
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(invalid(key("rate_per_second"), "must be a number above 0"));
        }
        if let Some(list) = &self.routing.jurisdictions {
            if let Some(unknown) = list.iter().find(|j| !jurisdictions.contains_key(*j)) {
                return Err(invalid(
                    key("match.jurisdictions"),
                    format!("{unknown} is not a configured jurisdiction"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Environment};

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
                    secret_env: None,
                    secret_file: None,
                }),
                &CleanerKind::Kafka(KafkaCleanerConfig::default()),
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
                "cleaners[0].secret: is required",
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
}
