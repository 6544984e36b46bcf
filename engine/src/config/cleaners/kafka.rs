//! `kind = "kafka"`: the cleaner reads its work from Kafka and answers on the results topic
//! (docs/KAFKA.md). Without `topic` it reads the Due messages the relay publishes, which carry
//! no identifiers; with `topic` every attempt is a message of its own on that topic, carrying
//! the subject's identifiers narrowed to the cleaner's `identifiers` (ADR 5).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer};

use super::BatchConfig;
use crate::config::validate::invalid;
use crate::config::{ConfigError, KafkaConfig, KAFKA_BROKERS_ENV};

/// The keys a Kafka cleaner has besides the common ones.
const KEYS: [&str; 2] = ["topic", "partition_key"];

/// The most characters of a Kafka topic name.
const MAX_TOPIC_CHARS: usize = 249;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaCleanerConfig {
    /// The cleaner's own topic: every attempt is published there with the identifiers.
    /// Absent: the cleaner reads the relay's Due messages (no identifiers).
    pub topic: Option<String>,
    /// What a message on the cleaner's own topic is keyed by.
    pub partition_key: PartitionKey,
}

/// The key of a message on a Kafka cleaner's own topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKey {
    /// The request id: one request's messages in one partition.
    #[default]
    Request,
    /// A keyed hash of the subject's identifiers (never the identifiers themselves): one
    /// person's messages in one partition, across requests.
    Subject,
}

/// The settings as serde reads them, once the keys of other kinds are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    topic: Option<String>,
    #[serde(default)]
    partition_key: PartitionKey,
}

impl<'de> Deserialize<'de> for KafkaCleanerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, toml::Value>::deserialize(deserializer)?;
        if let Some(key) = map.keys().find(|key| !KEYS.contains(&key.as_str())) {
            return Err(serde::de::Error::custom(format!(
                "unknown field `{key}`: a cleaner of kind = \"kafka\" has no `{key}` (its own \
                 keys are `topic` and `partition_key`; `url` and `secret` are for kind = \"http\")"
            )));
        }
        // The kind's keys reach serde through `flatten`'s buffer, which loses their position:
        // a wrong value names its key itself.
        for (key, value) in &map {
            let one = toml::Table::from_iter([(key.clone(), value.clone())]);
            Fields::deserialize(toml::Value::Table(one))
                .map_err(|e| serde::de::Error::custom(format!("`{key}`: {}", e.message())))?;
        }
        let fields = Fields::deserialize(toml::Value::Table(map.into_iter().collect()))
            .map_err(|e| serde::de::Error::custom(e.message()))?;
        Ok(Self {
            topic: fields.topic,
            partition_key: fields.partition_key,
        })
    }
}

impl KafkaCleanerConfig {
    /// Checks the settings against `[kafka]` and the cleaner's common `identifiers` and
    /// `batch`; `key` names a field of this cleaner (`cleaners[2].topic`).
    pub(super) fn check(
        &self,
        key: &dyn Fn(&str) -> String,
        identifiers: Option<&BTreeSet<String>>,
        batch: Option<&BatchConfig>,
        kafka: Option<&KafkaConfig>,
    ) -> Result<(), ConfigError> {
        let Some(topic) = &self.topic else {
            return self.check_on_due(key, identifiers, batch, kafka);
        };
        let Some(kafka) = kafka else {
            return Err(invalid(
                key("kind"),
                format!("\"kafka\" cleaners need Kafka enabled ([kafka] or {KAFKA_BROKERS_ENV})"),
            ));
        };
        check_topic_name(&key("topic"), topic)?;
        let shared = kafka
            .publish
            .iter()
            .find(|(_, published)| *published == topic)
            .map(|(event_type, _)| format!("[kafka].publish's {event_type} topic"))
            .or_else(|| (kafka.results_topic == *topic).then(|| "[kafka].results_topic".into()))
            .or_else(|| {
                (kafka.dead_letter_topic == *topic).then(|| "[kafka].dead_letter_topic".into())
            });
        if let Some(shared) = shared {
            return Err(invalid(
                key("topic"),
                format!(
                    "{topic:?} is also {shared}: a cleaner's own topic carries the subject's \
                     identifiers and must be read by that cleaner alone"
                ),
            ));
        }
        if self.partition_key == PartitionKey::Subject && batch.is_some() {
            return Err(invalid(
                key("partition_key"),
                "\"subject\" cannot key a batch, which carries many subjects: leave out \
                 `partition_key` or `batch`",
            ));
        }
        Ok(())
    }

    /// A cleaner without a topic of its own reads the relay's Due messages: Due must be
    /// published, and nothing that only its own topic could carry may be set.
    fn check_on_due(
        &self,
        key: &dyn Fn(&str) -> String,
        identifiers: Option<&BTreeSet<String>>,
        batch: Option<&BatchConfig>,
        kafka: Option<&KafkaConfig>,
    ) -> Result<(), ConfigError> {
        if !kafka.is_some_and(|k| k.publish.contains_key("Due")) {
            return Err(invalid(
                key("kind"),
                format!(
                    "\"kafka\" cleaners need Kafka enabled ([kafka] or {KAFKA_BROKERS_ENV}) and \
                     publishing Due, or a `topic` of their own"
                ),
            ));
        }
        let own_topic_only = [
            (identifiers.is_some(), "identifiers", "identifiers are sent only to a topic of the cleaner's own, never to the Due topic every subscriber reads"),
            (batch.is_some(), "batch", "a batch is one message on a topic of the cleaner's own; the Due topic carries one message per request"),
            (self.partition_key == PartitionKey::Subject, "partition_key", "the Due topic is keyed by request id; a subject key is only for a topic of the cleaner's own"),
        ];
        match own_topic_only.into_iter().find(|(set, _, _)| *set) {
            Some((_, field, why)) => Err(invalid(
                key(field),
                format!("needs `topic` (a topic of the cleaner's own): {why}"),
            )),
            None => Ok(()),
        }
    }
}

/// A Kafka topic name: 1 to 249 of ASCII letters, digits, `.`, `_` and `-`, not `.` or `..`.
fn check_topic_name(key: &str, topic: &str) -> Result<(), ConfigError> {
    let valid = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_CHARS
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "{topic:?} is not a Kafka topic name (1 to {MAX_TOPIC_CHARS} of ASCII letters, \
                 digits, `.`, `_` and `-`)"
            ),
        ))
    }
}

/// Refuses two Kafka cleaners sharing one topic of their own: each receives identifiers
/// narrowed to its own `identifiers`, which the other must not read.
pub(super) fn check_own_topics_distinct(
    topics: impl Iterator<Item = (usize, Option<String>)>,
) -> Result<(), ConfigError> {
    let mut seen = BTreeMap::new();
    for (index, topic) in topics {
        let Some(topic) = topic else { continue };
        if let Some(first) = seen.insert(topic.clone(), index) {
            return Err(invalid(
                format!("cleaners[{index}].topic"),
                format!("{topic:?} is already cleaners[{first}]'s topic: each cleaner's own"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CleanerKind, Config, Environment};

    fn parse(cleaners: &str) -> Result<Config, ConfigError> {
        let env = Environment {
            kafka_brokers: Some("b:9092".to_owned()),
        };
        Config::parse_with(cleaners, &env)
    }

    const SEARCH: &str = "[[cleaners]]\nname = \"search\"\nkind = \"kafka\"\n";

    #[test]
    fn a_cleaner_with_its_own_topic_parses() {
        let config = parse(&format!(
            "{SEARCH}topic = \"lethe.erase.search\"\npartition_key = \"subject\"\n\
             identifiers = [\"email\"]\n"
        ))
        .unwrap();
        let CleanerKind::Kafka(kafka) = &config.cleaners[0].kind else {
            panic!("not kafka");
        };
        assert_eq!(kafka.topic.as_deref(), Some("lethe.erase.search"));
        assert_eq!(kafka.partition_key, PartitionKey::Subject);
        let plain = parse(SEARCH).unwrap();
        assert_eq!(
            plain.cleaners[0].kind,
            CleanerKind::Kafka(KafkaCleanerConfig::default())
        );
    }

    #[test]
    fn what_only_an_own_topic_may_carry_is_refused_without_one_naming_the_key() {
        let own = "topic = \"lethe.erase.search\"\n";
        let cases = [
            (
                format!("{SEARCH}identifiers = [\"email\"]"),
                "cleaners[0].identifiers: needs `topic`",
            ),
            (
                format!("{SEARCH}batch = {{ max = 10 }}"),
                "cleaners[0].batch: needs `topic`",
            ),
            (
                format!("{SEARCH}partition_key = \"subject\""),
                "cleaners[0].partition_key: needs `topic`",
            ),
            (
                format!("{SEARCH}{own}partition_key = \"subject\"\nbatch = {{ max = 10 }}"),
                "cleaners[0].partition_key: \"subject\" cannot key a batch",
            ),
            (
                format!("{SEARCH}topic = \"lethe.due\""),
                "cleaners[0].topic: \"lethe.due\" is also [kafka].publish's Due topic",
            ),
            (
                format!("{SEARCH}topic = \"lethe.cleaner-results\""),
                "is also [kafka].results_topic",
            ),
            (
                format!("{SEARCH}topic = \"a topic\""),
                "cleaners[0].topic: \"a topic\" is not a Kafka topic name",
            ),
            (format!("{SEARCH}topic = \"\""), "cleaners[0].topic"),
            (
                format!("{SEARCH}{own}[[cleaners]]\nname = \"crm\"\nkind = \"kafka\"\n{own}"),
                "cleaners[1].topic: \"lethe.erase.search\" is already cleaners[0]'s topic",
            ),
            (format!("{SEARCH}topic = 5"), "`topic`: invalid type"),
            (
                format!("{SEARCH}partition_key = \"person\""),
                "`partition_key`: unknown variant `person`",
            ),
            (
                format!("{SEARCH}url = \"http://x\""),
                "unknown field `url`: a cleaner of kind = \"kafka\"",
            ),
            (format!("{SEARCH}topik = \"t\""), "unknown field `topik`"),
        ];
        for (text, wanted) in cases {
            let message = parse(&text).unwrap_err().to_string();
            assert!(message.contains(wanted), "{text:?} gave {message:?}");
        }
    }

    #[test]
    fn an_own_topic_needs_kafka_but_not_the_due_topic() {
        let text = format!(
            "[kafka]\nbrokers = \"b:9092\"\npublish = {{ Completed = \"lethe.completed\" }}\n\
             {SEARCH}topic = \"lethe.erase.search\"\n"
        );
        Config::parse_with(&text, &Environment::default()).unwrap();
        let without = format!("{SEARCH}topic = \"lethe.erase.search\"\n");
        let message = Config::parse_with(&without, &Environment::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("cleaners[0].kind") && message.contains("Kafka enabled"),
            "{message}"
        );
        let on_due = text.replace("topic = \"lethe.erase.search\"\n", "");
        let message = Config::parse_with(&on_due, &Environment::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("publishing Due"), "{message}");
    }
}
