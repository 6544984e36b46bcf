//! `[kafka]`: the broker, the topics the relay publishes to, and the results topics.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::validate::invalid;
use super::{ConfigError, KAFKA_BROKERS_ENV};

/// `[kafka]` in lethe.toml, or `LETHE_KAFKA_BROKERS` alone ([`KafkaConfig::with_brokers`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers; `LETHE_KAFKA_BROKERS` replaces them, so the file may leave them out.
    #[serde(default)]
    pub brokers: String,
    /// Event type → topic. Default: Due, Completed and Cancelled.
    #[serde(default = "default_publish")]
    pub publish: BTreeMap<String, String>,
    #[serde(default = "default_results_topic")]
    pub results_topic: String,
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
}

impl KafkaConfig {
    /// Kafka with every default: what `LETHE_KAFKA_BROKERS` enables without a `[kafka]` section.
    pub fn with_brokers(brokers: String) -> Self {
        Self {
            brokers,
            publish: default_publish(),
            results_topic: default_results_topic(),
            dead_letter_topic: default_dead_letter_topic(),
        }
    }
}

fn default_publish() -> BTreeMap<String, String> {
    [
        ("Due", "lethe.due"),
        ("Completed", "lethe.completed"),
        ("Cancelled", "lethe.cancelled"),
    ]
    .into_iter()
    .map(|(t, topic)| (t.to_owned(), topic.to_owned()))
    .collect()
}

fn default_results_topic() -> String {
    "lethe.cleaner-results".to_owned()
}

fn default_dead_letter_topic() -> String {
    "lethe.dead-letter".to_owned()
}

impl KafkaConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid(
                "kafka.brokers",
                format!("must name at least one broker (here or in {KAFKA_BROKERS_ENV})"),
            ));
        }
        let event_types = lethe_domain::event::EVENT_TYPES;
        for (event_type, topic) in &self.publish {
            if !event_types.contains(&event_type.as_str()) {
                return Err(invalid(
                    format!("kafka.publish.{event_type}"),
                    format!("is not an event type; use {}", event_types.join(", ")),
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
            ("kafka.results_topic", &self.results_topic),
            ("kafka.dead_letter_topic", &self.dead_letter_topic),
        ] {
            if topic.trim().is_empty() {
                return Err(invalid(key, "names no topic"));
            }
        }
        Ok(())
    }
}
