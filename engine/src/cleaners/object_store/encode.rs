//! Filling a key template with the subject's identifiers, so that a value can never widen
//! what is deleted: every byte but the unreserved `A-Za-z0-9-_~` is percent-encoded, so `.`,
//! `/`, `*` and `%` stand for themselves and not for a path part, a glob or an escape (`..`
//! becomes `%2E%2E`), and an empty value fills nothing.

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::config::{KeyTemplate, TemplatePart};

/// Everything but `A-Za-z0-9-_~`.
const IDENTIFIER: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// An identifier value as it appears in a key.
pub fn encode_identifier(value: &str) -> String {
    utf8_percent_encode(value, IDENTIFIER).to_string()
}

/// `template` filled with `subject`'s identifiers, or the kind of the first identifier the
/// subject lacks (or has empty).
pub fn fill(template: &KeyTemplate, subject: &BTreeMap<String, String>) -> Result<String, String> {
    let mut key = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Literal(text) => key.push_str(text),
            TemplatePart::Identifier(kind) => match subject.get(kind) {
                Some(value) if !value.is_empty() => key.push_str(&encode_identifier(value)),
                _ => return Err(kind.clone()),
            },
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_are_kept() {
        assert_eq!(encode_identifier("Az09-_~"), "Az09-_~");
        assert_eq!(encode_identifier(".."), "%2E%2E");
        assert_eq!(encode_identifier("../x"), "%2E%2E%2Fx");
        assert_eq!(encode_identifier("*"), "%2A");
        assert_eq!(encode_identifier("a%2F"), "a%252F");
        assert_eq!(encode_identifier("a b@c.d"), "a%20b%40c%2Ed");
        assert_eq!(encode_identifier("é"), "%C3%A9");
    }

    #[test]
    fn a_missing_or_empty_identifier_fills_nothing() {
        let template = KeyTemplate::parse("u/{user_id}/{email}.png").unwrap();
        let mut subject = BTreeMap::from([("user_id".to_owned(), "4/2".to_owned())]);
        assert_eq!(fill(&template, &subject), Err("email".to_owned()));
        subject.insert("email".to_owned(), String::new());
        assert_eq!(fill(&template, &subject), Err("email".to_owned()));
        subject.insert("email".to_owned(), "a.b".to_owned());
        assert_eq!(fill(&template, &subject).unwrap(), "u/4%2F2/a%2Eb.png");
    }
}
