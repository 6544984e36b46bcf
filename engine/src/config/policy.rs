//! `[policy]`, `[jurisdictions.*]` and `[sources.*]`: grace period, reminders, retention,
//! deadlines and approval.

use std::collections::BTreeMap;
use std::time::Duration;

use lethe_domain::{DeadlineRule, Jurisdiction, Span};
use serde::{Deserialize, Deserializer};

use super::validate::invalid;
use super::{Config, ConfigDuration, ConfigError};

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
    /// Whether an administrator must approve each request before its grace period starts;
    /// `[jurisdictions.*]` and `[sources.*]` may say otherwise.
    #[serde(default)]
    pub approval: Approval,
}

/// `approval = "none"` (the default) or `"required"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    #[default]
    None,
    Required,
}

/// `[sources.<source>]`: rules for the requests whose `source` is that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub approval: Option<Approval>,
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
            approval: Approval::None,
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
    /// Over `[policy] approval` for this jurisdiction's requests.
    #[serde(default)]
    pub approval: Option<Approval>,
}

fn span<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl Config {
    pub(super) fn with_builtin_jurisdictions(mut self) -> Self {
        for (name, rule) in [("gdpr", DeadlineRule::GDPR), ("ccpa", DeadlineRule::CCPA)] {
            let name = Jurisdiction::parse(name).unwrap_or_else(|e| unreachable!("{e}"));
            self.jurisdictions
                .entry(name)
                .or_insert(JurisdictionConfig {
                    deadline: rule.base,
                    max_extension: rule.max_extension,
                    approval: None,
                });
        }
        self
    }
}

impl PolicyConfig {
    /// Checks `[policy]`, and `[jurisdictions.*]` that it refers to.
    pub(super) fn check(
        &self,
        jurisdictions: &BTreeMap<Jurisdiction, JurisdictionConfig>,
    ) -> Result<(), ConfigError> {
        if self.grace_period.0.is_zero() {
            return Err(invalid("policy.grace_period", "must be longer than zero"));
        }
        for (i, reminder) in self.reminders.iter().enumerate() {
            if reminder.0 >= self.grace_period.0 || reminder.0.is_zero() {
                return Err(invalid(
                    format!("policy.reminders[{i}]"),
                    "must be longer than zero and shorter than policy.grace_period",
                ));
            }
        }
        if !jurisdictions.contains_key(&self.default_jurisdiction) {
            return Err(invalid(
                "policy.default_jurisdiction",
                "names no configured jurisdiction",
            ));
        }
        for (name, rule) in jurisdictions {
            if rule.deadline.is_zero() {
                return Err(invalid(
                    format!("jurisdictions.{name}.deadline"),
                    "must be at least one day",
                ));
            }
        }
        Ok(())
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
        let policy = config.request_policy(&gdpr, None).unwrap();
        assert_eq!(policy.deadline, DeadlineRule::GDPR);
        assert_eq!(policy.reminders.len(), 2);
        assert!(config
            .request_policy(&Jurisdiction::parse("ccpa").unwrap(), None)
            .is_some());
        assert!(config
            .request_policy(&Jurisdiction::parse("lgpd").unwrap(), None)
            .is_none());
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
            .request_policy(&Jurisdiction::parse("lgpd").unwrap(), None)
            .unwrap();
        assert_eq!(lgpd.deadline.base, Span::days(15));
    }
}

#[cfg(test)]
mod approval_tests {
    use super::*;

    fn required(config: &Config, jurisdiction: &str, source: Option<&str>) -> bool {
        config
            .request_policy(&Jurisdiction::parse(jurisdiction).unwrap(), source)
            .unwrap()
            .approval_required
    }

    #[test]
    fn approval_by_policy_then_jurisdiction_then_source() {
        assert!(!required(&Config::parse("").unwrap(), "gdpr", Some("web")));
        let config = Config::parse(
            r#"
            [policy]
            approval = "required"
            [jurisdictions.ccpa]
            deadline = "45d"
            max_extension = "45d"
            approval = "none"
            [sources.support-desk]
            approval = "required"
            "#,
        )
        .unwrap();
        assert!(required(&config, "gdpr", None));
        assert!(!required(&config, "ccpa", None));
        assert!(!required(&config, "ccpa", Some("web")));
        assert!(required(&config, "ccpa", Some("support-desk")));
    }

    #[test]
    fn an_unknown_approval_is_refused_by_name() {
        let error = Config::parse("[policy]\napproval = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("approval") && error.contains("required"),
            "{error}"
        );
    }
}
