//! The data subject: who is to be forgotten, as one or more identifiers by kind
//! (`user_id`, `email`, ...). Every cleaner receives the whole map and looks up what it knows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// At most this many identifiers per subject.
pub const MAX_SUBJECT_KINDS: usize = 16;
/// At most this many characters per identifier kind.
pub const MAX_KIND_LEN: usize = 32;
/// At most this many characters per identifier value.
pub const MAX_VALUE_LEN: usize = 256;

/// A validated, non-empty map from identifier kind to value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Subject(BTreeMap<String, String>);

impl Subject {
    /// Validates identifiers; the error names the offending field as `subject.<kind>`.
    pub fn parse(identifiers: BTreeMap<String, String>) -> Result<Self, InvalidInput> {
        if identifiers.is_empty() {
            return Err(InvalidInput::new(
                "subject",
                "must name at least one identifier, e.g. {\"user_id\": \"42\"}",
            ));
        }
        if identifiers.len() > MAX_SUBJECT_KINDS {
            return Err(InvalidInput::new(
                "subject",
                format!("must have at most {MAX_SUBJECT_KINDS} identifiers"),
            ));
        }
        for (kind, value) in &identifiers {
            check_kind(kind)?;
            let field = format!("subject.{kind}");
            if value.trim().is_empty() {
                return Err(InvalidInput::new(field, "must not be empty"));
            }
            if value.chars().count() > MAX_VALUE_LEN {
                return Err(InvalidInput::new(
                    field,
                    format!("must be at most {MAX_VALUE_LEN} characters"),
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(InvalidInput::new(
                    field,
                    "must not contain control characters",
                ));
            }
        }
        Ok(Self(identifiers))
    }

    pub fn identifiers(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// The subject as the log records it. Everything this version writes is sealed: encrypted by
/// the engine under the request's own data key, so destroying that key ("shredding") leaves
/// the history verifiable and the identity unreadable. The domain never looks inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubjectRecord {
    Sealed(SealedSubject),
    /// Written before sealing existed, or by tests that do not care.
    Plain(Subject),
}

/// An opaque ciphertext of the subject's identifiers. The `$` in its JSON key cannot start an
/// identifier kind, so a sealed record is never mistaken for a plain one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSubject {
    #[serde(rename = "$sealed")]
    pub sealed: String,
}

impl From<Subject> for SubjectRecord {
    fn from(subject: Subject) -> Self {
        Self::Plain(subject)
    }
}

/// Whether `kind` is an identifier kind as subjects write them (`user_id`, `email`): 1 to
/// [`MAX_KIND_LEN`] characters of `a-z`, `0-9` and `_`, starting with a letter.
pub fn is_identifier_kind(kind: &str) -> bool {
    kind.len() <= MAX_KIND_LEN
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn check_kind(kind: &str) -> Result<(), InvalidInput> {
    if is_identifier_kind(kind) {
        Ok(())
    } else {
        Err(InvalidInput::new(
            format!("subject.{}", kind.chars().take(MAX_KIND_LEN).collect::<String>()),
            format!(
                "identifier kinds are 1-{MAX_KIND_LEN} characters of a-z, 0-9 and '_', starting with a letter"
            ),
        ))
    }
}

impl TryFrom<BTreeMap<String, String>> for Subject {
    type Error = InvalidInput;

    fn try_from(value: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Subject> for BTreeMap<String, String> {
    fn from(value: Subject) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(pairs: &[(&str, &str)]) -> Result<Subject, InvalidInput> {
        Subject::parse(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_subject_needs_at_least_one_identifier() {
        assert_eq!(subject(&[]).unwrap_err().field, "subject");
        assert!(subject(&[("user_id", "42")]).is_ok());
    }

    #[test]
    fn errors_name_the_identifier_at_fault() {
        assert_eq!(
            subject(&[("email", " ")]).unwrap_err().field,
            "subject.email"
        );
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        assert_eq!(
            subject(&[("email", &long)]).unwrap_err().field,
            "subject.email"
        );
        assert_eq!(
            subject(&[("E-mail", "a@b")]).unwrap_err().field,
            "subject.E-mail"
        );
        assert_eq!(
            subject(&[("tel", "1\n2")]).unwrap_err().field,
            "subject.tel"
        );
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<Subject>("{}").unwrap_err();
        assert!(err.to_string().contains("at least one identifier"), "{err}");
    }
}
