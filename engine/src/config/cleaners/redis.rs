//! `kind = "redis"`: Lethe deletes keys and hash fields from Redis itself (docs/CLEANERS.md).
//!
//! The keys are templates: literal text and `{identifier_kind}` placeholders the subject's
//! identifiers fill in. A pattern is a template with Redis glob characters in its literal text;
//! a placeholder there must be kept apart from a glob by a delimiter, or the subject `42`'s
//! pattern `session:{user_id}*` would match the keys of `420`.

use std::path::PathBuf;

use serde::Deserialize;

use super::key_template::{split, TemplatePart};
use crate::config::validate::invalid;
use crate::config::{ConfigError, SecretSource};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCleanerConfig {
    /// The server, `redis://host:port/db`, without its password.
    pub url: String,
    /// The variable that holds the password (`password_env`), or the file (`password_file`).
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Keys deleted whole (`UNLINK`), e.g. `user:{user_id}`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Glob patterns whose every match is deleted (`SCAN MATCH`, then `UNLINK`).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Single fields of hashes (`HDEL`).
    #[serde(default)]
    pub hash_fields: Vec<RedisHashField>,
}

/// `{ key = "last_seen", field = "{user_id}" }`: one field of one hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisHashField {
    pub key: String,
    pub field: String,
}

impl RedisCleanerConfig {
    /// Where the password is, if there is one.
    pub fn password(&self) -> SecretSource {
        SecretSource::new(self.password_env.as_deref(), self.password_file.as_deref())
    }

    /// Checks the settings; `key` names a field of this cleaner (`cleaners[2].url`).
    pub(super) fn check(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        self.check_url(key)?;
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(invalid(
                key("password_env"),
                "set either password_env or password_file, not both",
            ));
        }
        if self.keys.is_empty() && self.patterns.is_empty() && self.hash_fields.is_empty() {
            return Err(invalid(
                key("keys"),
                "a redis cleaner needs at least one of keys, patterns or hash_fields",
            ));
        }
        for (i, text) in self.keys.iter().enumerate() {
            let at = key(&format!("keys[{i}]"));
            let template = RedisTemplate::parse(text).map_err(|m| invalid(&at, m))?;
            template
                .require_placeholder()
                .map_err(|m| invalid(&at, m))?;
        }
        for (i, text) in self.patterns.iter().enumerate() {
            let at = key(&format!("patterns[{i}]"));
            let template = RedisTemplate::parse(text).map_err(|m| invalid(&at, m))?;
            template
                .require_placeholder()
                .map_err(|m| invalid(&at, m))?;
            template.check_as_pattern().map_err(|m| invalid(&at, m))?;
        }
        for (i, field) in self.hash_fields.iter().enumerate() {
            let at = |part: &str| key(&format!("hash_fields[{i}].{part}"));
            let hash = RedisTemplate::parse(&field.key).map_err(|m| invalid(at("key"), m))?;
            let name = RedisTemplate::parse(&field.field).map_err(|m| invalid(at("field"), m))?;
            if hash.placeholders().next().is_none() {
                name.require_placeholder()
                    .map_err(|m| invalid(at("field"), m))?;
            }
        }
        Ok(())
    }

    fn check_url(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let Ok(url) = reqwest::Url::parse(&self.url) else {
            return Err(invalid(key("url"), "is not a URL (redis://host:port/db)"));
        };
        if url.scheme() != "redis" {
            return Err(invalid(
                key("url"),
                format!(
                    "must start with redis:// ({}:// is not supported)",
                    url.scheme()
                ),
            ));
        }
        if url.password().is_some() {
            return Err(invalid(
                key("url"),
                "must not carry a password: name where it is with password_env or \
                 password_file",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(key("url"), "names no host"));
        }
        Ok(())
    }
}

/// A key, pattern or field as written: literal text and `{kind}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTemplate {
    pub parts: Vec<TemplatePart>,
}

/// The characters Redis's glob matching gives a meaning to.
pub const REDIS_GLOB_CHARACTERS: [char; 5] = ['*', '?', '[', ']', '\\'];

impl RedisTemplate {
    /// Parses `text`; the error says what is wrong (never a subject's value: there is none).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let parts = split(text, |kind| {
            format!(
                "{{{kind}}} is not a placeholder: an identifier kind in braces, e.g. \
                 {{user_id}} (lowercase letters, digits and `_`, starting with a letter)"
            )
        })?;
        Ok(Self { parts })
    }

    /// The identifier kinds it names, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Identifier(kind) => Some(kind.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// A template without a placeholder would delete the same key for every subject.
    fn require_placeholder(&self) -> Result<(), String> {
        match self.placeholders().next() {
            Some(_) => Ok(()),
            None => Err(
                "names no identifier: it would delete the same data for every subject \
                 (write a placeholder such as {user_id})"
                    .to_owned(),
            ),
        }
    }

    /// A glob right before or after a placeholder widens what one subject's pattern matches
    /// to the keys of others (`{user_id}*` matches `420` for `42`).
    fn check_as_pattern(&self) -> Result<(), String> {
        for (i, part) in self.parts.iter().enumerate() {
            let TemplatePart::Identifier(kind) = part else {
                continue;
            };
            let next = match self.parts.get(i + 1) {
                Some(TemplatePart::Literal(text)) => text.chars().next(),
                Some(TemplatePart::Identifier(_)) => Some('{'),
                None => None,
            };
            let previous = match i.checked_sub(1).map(|p| &self.parts[p]) {
                Some(TemplatePart::Literal(text)) => text.chars().last(),
                _ => None,
            };
            if next.is_some_and(|c| !is_delimiter(c)) {
                return Err(format!(
                    "{{{kind}}} must be followed by a delimiter such as `:` (or end the \
                     pattern): a glob or more text right after it would match other \
                     subjects' keys (42 would match 420)"
                ));
            }
            if previous.is_some_and(|c| REDIS_GLOB_CHARACTERS.contains(&c)) {
                return Err(format!(
                    "{{{kind}}} must be preceded by a delimiter such as `:`, not a glob: \
                     it would match other subjects' keys (42 would match 142)"
                ));
            }
        }
        Ok(())
    }
}

/// Punctuation that is not a glob: what ends an identifier in a key.
fn is_delimiter(c: char) -> bool {
    c.is_ascii_punctuation() && !REDIS_GLOB_CHARACTERS.contains(&c) && c != '{'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn check(settings: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "[[cleaners]]\nname = \"cache\"\nkind = \"redis\"\n{settings}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_parses() {
        let config = check(
            r#"url = "redis://cache.internal:6379/0"
            password_env = "CACHE_PASSWORD"
            keys = ["user:{user_id}", "profile:{email}"]
            patterns = ["session:{user_id}:*"]
            hash_fields = [{ key = "last_seen", field = "{user_id}" }]"#,
        )
        .unwrap();
        let crate::config::CleanerKind::Redis(redis) = &config.cleaners[0].kind else {
            panic!("not redis");
        };
        assert_eq!(redis.keys.len(), 2);
        assert_eq!(redis.hash_fields[0].field, "{user_id}");
        assert_eq!(
            redis.password().env.as_deref(),
            Some("CACHE_PASSWORD"),
            "the password's variable"
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_their_key() {
        let cases = [
            (
                r#"url = "redis://:pw@h:6379/0"
                keys = ["u:{user_id}"]"#,
                "cleaners[0].url: must not carry a password: name where it is with password_env",
            ),
            (
                r#"url = "rediss://h:6379/0"
                keys = ["u:{user_id}"]"#,
                "cleaners[0].url: must start with redis://",
            ),
            (
                r#"url = "redis://h""#,
                "cleaners[0].keys: a redis cleaner needs",
            ),
            (
                r#"url = "redis://h"
                keys = ["u:{user_id}", "global"]"#,
                "cleaners[0].keys[1]: names no identifier",
            ),
            (
                r#"url = "redis://h"
                keys = ["u:{User}"]"#,
                "cleaners[0].keys[0]: {User} is not a placeholder",
            ),
            (
                r#"url = "redis://h"
                keys = ["u:{user_id"]"#,
                "cleaners[0].keys[0]: has a `{` without its `}`",
            ),
            (
                r#"url = "redis://h"
                patterns = ["session:{user_id}:*", "session:{user_id}*"]"#,
                "cleaners[0].patterns[1]: {user_id} must be followed by a delimiter",
            ),
            (
                r#"url = "redis://h"
                patterns = ["session:{user_id}0:*"]"#,
                "cleaners[0].patterns[0]: {user_id} must be followed by a delimiter",
            ),
            (
                r#"url = "redis://h"
                patterns = ["session:*{user_id}"]"#,
                "cleaners[0].patterns[0]: {user_id} must be preceded by a delimiter",
            ),
            (
                r#"url = "redis://h"
                hash_fields = [{ key = "seen", field = "all" }]"#,
                "cleaners[0].hash_fields[0].field: names no identifier",
            ),
            (
                r#"url = "redis://h"
                password_env = "A"
                password_file = "/b"
                keys = ["u:{user_id}"]"#,
                "cleaners[0].password_env: set either password_env or password_file",
            ),
            (
                r#"url = "redis://h"
                keys = ["u:{user_id}"]
                key = "x""#,
                "unknown field `key`",
            ),
        ];
        for (settings, expected) in cases {
            let error = check(settings).unwrap_err();
            assert!(error.contains(expected), "{settings}\n=> {error}");
        }
    }

    #[test]
    fn a_pattern_may_end_with_its_placeholder_or_keep_it_apart_from_globs() {
        for pattern in ["a:{user_id}", "a:{user_id}:*", "a:*:{user_id}:b", "{a}:{b}"] {
            let template = RedisTemplate::parse(pattern).unwrap();
            assert_eq!(template.check_as_pattern(), Ok(()), "{pattern}");
        }
        let adjacent = RedisTemplate::parse("{a}{b}:*").unwrap();
        assert!(adjacent.check_as_pattern().is_err());
    }
}
