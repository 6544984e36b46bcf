//! What one subject's erasure is made of: the cleaner's templates filled with the subject's
//! identifiers, one [`Target`] per setting, in the order of the settings.

use std::collections::BTreeMap;

use crate::config::{RedisCleanerConfig, RedisTemplate, TemplatePart, REDIS_GLOB_CHARACTERS};

/// The cleaner's settings, parsed once.
#[derive(Debug, Clone)]
pub(super) struct Templates {
    keys: Vec<(String, RedisTemplate)>,
    patterns: Vec<(String, RedisTemplate)>,
    hash_fields: Vec<(String, RedisTemplate, RedisTemplate)>,
}

impl Templates {
    /// The error names the setting (`patterns[1]`) and what is wrong with it.
    pub(super) fn parse(settings: &RedisCleanerConfig) -> Result<Self, String> {
        let parse = |setting: String, text: &str| {
            RedisTemplate::parse(text).map_err(|message| format!("{setting}: {message}"))
        };
        let keys = enumerate(&settings.keys, "keys")
            .map(|(setting, text)| Ok((text.clone(), parse(setting, text)?)))
            .collect::<Result<_, String>>()?;
        let patterns = enumerate(&settings.patterns, "patterns")
            .map(|(setting, text)| Ok((text.clone(), parse(setting, text)?)))
            .collect::<Result<_, String>>()?;
        let hash_fields = enumerate(&settings.hash_fields, "hash_fields")
            .map(|(setting, hash)| {
                Ok((
                    format!("{} {}", hash.key, hash.field),
                    parse(format!("{setting}.key"), &hash.key)?,
                    parse(format!("{setting}.field"), &hash.field)?,
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            keys,
            patterns,
            hash_fields,
        })
    }

    /// The targets for `subject`, in the order of the settings: keys, patterns, hash fields.
    pub(super) fn plan(&self, subject: &BTreeMap<String, String>) -> Vec<Target> {
        let keys = self.keys.iter().enumerate().map(|(i, (written, key))| {
            let action = match fill(key, subject, false) {
                Ok(key) => Action::Unlink(key),
                Err(why) => Action::Skip(why),
            };
            Target::new(format!("keys[{i}]"), written, action)
        });
        let patterns = self
            .patterns
            .iter()
            .enumerate()
            .map(|(i, (written, pattern))| {
                let action = match fill(pattern, subject, true) {
                    Ok(pattern) => Action::Scan(pattern),
                    Err(why) => Action::Skip(why),
                };
                Target::new(format!("patterns[{i}]"), written, action)
            });
        let fields = self
            .hash_fields
            .iter()
            .enumerate()
            .map(|(i, (written, key, field))| {
                let action = match (fill(key, subject, false), fill(field, subject, false)) {
                    (Ok(key), Ok(field)) => Action::Hdel { key, field },
                    (Err(why), _) | (_, Err(why)) => Action::Skip(why),
                };
                Target::new(format!("hash_fields[{i}]"), written, action)
            });
        keys.chain(patterns).chain(fields).collect()
    }
}

fn enumerate<'a, T>(items: &'a [T], name: &'a str) -> impl Iterator<Item = (String, &'a T)> + 'a {
    items
        .iter()
        .enumerate()
        .map(move |(i, item)| (format!("{name}[{i}]"), item))
}

/// One setting made concrete for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// Which setting (`keys[0]`, `patterns[1]`, `hash_fields[0]`): what errors name.
    pub setting: String,
    /// The setting as written, with its placeholders (`session:{user_id}:*`).
    pub written: String,
    pub action: Action,
}

impl Target {
    fn new(setting: String, written: &str, action: Action) -> Self {
        Self {
            setting,
            written: written.to_owned(),
            action,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Delete this key.
    Unlink(String),
    /// Delete every key this glob pattern matches (the identifiers in it escaped).
    Scan(String),
    /// Delete this field of this hash.
    Hdel { key: String, field: String },
    /// Nothing to do for this subject, and why (names the identifier kind, never a value).
    Skip(String),
}

/// The template with the subject's identifiers in place of its placeholders; in a pattern,
/// with their glob characters escaped so that an identifier `*` matches only a literal `*`.
fn fill(
    template: &RedisTemplate,
    subject: &BTreeMap<String, String>,
    pattern: bool,
) -> Result<String, String> {
    let mut text = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Literal(literal) => text.push_str(literal),
            TemplatePart::Identifier(kind) => match subject.get(kind) {
                None => return Err(format!("the subject has no {kind}")),
                Some(value) if value.is_empty() => {
                    return Err(format!("the subject's {kind} is empty"))
                }
                Some(value) if pattern => text.push_str(&escape_glob(value)),
                Some(value) => text.push_str(value),
            },
        }
    }
    Ok(text)
}

/// `value` matched literally by Redis's glob matching.
pub(super) fn escape_glob(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if REDIS_GLOB_CHARACTERS.contains(&c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(keys: &[&str], patterns: &[&str], fields: &[(&str, &str)]) -> Templates {
        let settings = RedisCleanerConfig {
            url: "redis://h".to_owned(),
            password_env: None,
            password_file: None,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            hash_fields: fields
                .iter()
                .map(|(key, field)| crate::config::RedisHashField {
                    key: (*key).to_owned(),
                    field: (*field).to_owned(),
                })
                .collect(),
        };
        Templates::parse(&settings).unwrap()
    }

    fn subject(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn templates_are_filled_in_the_order_of_the_settings_and_globs_escaped_in_patterns() {
        let templates = templates(
            &["user:{user_id}", "profile:{email}"],
            &["session:{user_id}:*"],
            &[("last_seen", "{user_id}")],
        );
        let actions: Vec<Action> = templates
            .plan(&subject(&[("user_id", "a*b?[c]\\")]))
            .into_iter()
            .map(|t| t.action)
            .collect();
        assert_eq!(
            actions,
            [
                Action::Unlink("user:a*b?[c]\\".to_owned()),
                Action::Skip("the subject has no email".to_owned()),
                Action::Scan("session:a\\*b\\?\\[c\\]\\\\:*".to_owned()),
                Action::Hdel {
                    key: "last_seen".to_owned(),
                    field: "a*b?[c]\\".to_owned()
                },
            ]
        );
    }

    #[test]
    fn an_empty_identifier_deletes_nothing() {
        let templates = templates(&["user:{user_id}"], &["s:{user_id}:*"], &[]);
        let plan = templates.plan(&subject(&[("user_id", "")]));
        assert!(plan.iter().all(|t| matches!(t.action, Action::Skip(_))));
        assert_eq!(plan[1].setting, "patterns[0]");
        assert_eq!(plan[1].written, "s:{user_id}:*");
    }
}
