//! The environment variables that change the config itself.

use super::{Config, ConfigError, KafkaConfig};

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

impl Config {
    pub(super) fn with_environment(
        mut self,
        environment: &Environment,
    ) -> Result<Self, ConfigError> {
        if let Some(brokers) = &environment.kafka_brokers {
            if brokers.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: KAFKA_BROKERS_ENV.to_owned(),
                    message: "is set but names no broker; unset it to run without Kafka".to_owned(),
                });
            }
            match &mut self.kafka {
                Some(kafka) => kafka.brokers.clone_from(brokers),
                None => self.kafka = Some(KafkaConfig::with_brokers(brokers.clone())),
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
