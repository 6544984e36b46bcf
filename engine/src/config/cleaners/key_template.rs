//! Templates, `avatars/{user_id}.png`: literal text and `{identifier}` placeholders, split by
//! one parser ([`split`]) for object keys and Redis keys. Object key templates are checked here,
//! at start, and filled in by the object_store cleaner, which encodes each
//! identifier value so that it cannot act as a path part or a glob.

use lethe_domain::subject::is_identifier_kind;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Text written in the template, used as it is.
    Literal(String),
    /// `{user_id}`: the subject's identifier of that kind.
    Identifier(String),
}

/// A template split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    pub parts: Vec<TemplatePart>,
}

/// Splits a template into literal text and `{kind}` placeholders: the one parser of the
/// object keys' and the Redis keys' templates. A brace without its partner is refused; a
/// placeholder that is not an identifier kind is refused with `bad_kind(kind)`, each kind of
/// template wording it for its own users.
pub fn split(text: &str, bad_kind: impl Fn(&str) -> String) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("has a `}` without its `{`".to_owned());
        }
        if open > 0 {
            parts.push(TemplatePart::Literal(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "has a `{` without its `}`".to_owned())?;
        let kind = &after[..close];
        if !is_identifier_kind(kind) {
            return Err(bad_kind(kind));
        }
        parts.push(TemplatePart::Identifier(kind.to_owned()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest.to_owned()));
    }
    Ok(parts)
}

impl KeyTemplate {
    /// Splits `text`; the error says what is wrong without the key (the caller names it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts = split(text, |kind| {
            format!(
                "{{{kind}}} does not name an identifier kind (lowercase letters, digits and \
                 `_`, starting with a letter)"
            )
        })?;
        let template = Self { parts };
        template.check_shape(text)?;
        Ok(template)
    }

    /// The identifier kinds the template needs, in order.
    pub fn identifiers(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Identifier(kind) => Some(kind.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// A key is a list of `/`-separated parts, none empty, `.` or `..`, without control
    /// characters, and has at least one placeholder (a fixed key would be deleted for every
    /// subject).
    fn check_shape(&self, text: &str) -> Result<(), String> {
        if self.identifiers().next().is_none() {
            return Err(
                "has no {identifier} placeholder: it would delete the same objects for \
                        every subject"
                    .to_owned(),
            );
        }
        if text.chars().any(char::is_control) {
            return Err("contains a control character".to_owned());
        }
        if text.starts_with('/') {
            return Err("starts with `/` (keys are relative to the bucket)".to_owned());
        }
        // Placeholders stand for a non-empty encoded value: any text without `/` will do.
        let sample: String = self
            .parts
            .iter()
            .map(|part| match part {
                TemplatePart::Literal(text) => text.as_str(),
                TemplatePart::Identifier(_) => "x",
            })
            .collect();
        let body = sample.strip_suffix('/').unwrap_or(&sample);
        if body.split('/').any(|part| part.is_empty()) {
            return Err("has an empty path part (`//`)".to_owned());
        }
        if body.split('/').any(|part| part == "." || part == "..") {
            return Err("has a `.` or `..` path part".to_owned());
        }
        Ok(())
    }

    /// A key template names one object: it must not end with `/`.
    pub fn check_key(&self, text: &str) -> Result<(), String> {
        if text.ends_with('/') {
            return Err(
                "ends with `/`: a key names one object (use `prefixes` for a folder)".to_owned(),
            );
        }
        Ok(())
    }

    /// A prefix template names a folder: it ends with `/`, and every placeholder is followed by
    /// `/`, so that the objects of `42` are never those of `420` (`uploads/42` is a prefix of
    /// `uploads/420`).
    pub fn check_prefix(&self) -> Result<(), String> {
        for (i, part) in self.parts.iter().enumerate() {
            if let TemplatePart::Identifier(kind) = part {
                let next = self.parts.get(i + 1);
                if !matches!(next, Some(TemplatePart::Literal(text)) if text.starts_with('/')) {
                    return Err(format!(
                        "{{{kind}}} must be followed by `/`: otherwise the prefix of one value \
                         would also cover longer ones (42 is a prefix of 420)"
                    ));
                }
            }
        }
        if !matches!(self.parts.last(), Some(TemplatePart::Literal(text)) if text.ends_with('/')) {
            return Err("must end with `/` (a prefix is a folder)".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_splits_into_literals_and_identifiers() {
        let template = KeyTemplate::parse("avatars/{user_id}/{email}.png").unwrap();
        assert_eq!(
            template.parts,
            [
                TemplatePart::Literal("avatars/".into()),
                TemplatePart::Identifier("user_id".into()),
                TemplatePart::Literal("/".into()),
                TemplatePart::Identifier("email".into()),
                TemplatePart::Literal(".png".into()),
            ]
        );
        assert_eq!(
            template.identifiers().collect::<Vec<_>>(),
            ["user_id", "email"]
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (text, wanted) in [
            ("avatars/{user_id", "without its `}`"),
            ("avatars/user_id}", "without its `{`"),
            ("avatars/{User}", "does not name an identifier kind"),
            ("avatars/{}", "does not name an identifier kind"),
            ("avatars/fixed.png", "no {identifier}"),
            ("/avatars/{user_id}", "starts with `/`"),
            ("avatars//{user_id}", "empty path part"),
            ("avatars/../{user_id}", "`..` path part"),
        ] {
            let error = KeyTemplate::parse(text).unwrap_err();
            assert!(error.contains(wanted), "{text}: {error}");
        }
    }

    #[test]
    fn a_prefix_needs_a_delimiter_after_each_placeholder_and_at_its_end() {
        let ok = KeyTemplate::parse("uploads/{user_id}/").unwrap();
        assert_eq!(ok.check_prefix(), Ok(()));
        let ok = KeyTemplate::parse("{tenant}/users/{user_id}/").unwrap();
        assert_eq!(ok.check_prefix(), Ok(()));
        for text in ["uploads/{user_id}", "uploads/{user_id}-x/", "u/{a}{b}/"] {
            let error = KeyTemplate::parse(text)
                .unwrap()
                .check_prefix()
                .unwrap_err();
            assert!(error.contains("must be followed by `/`"), "{text}: {error}");
        }
        let error = KeyTemplate::parse("uploads/{user_id}/images")
            .unwrap()
            .check_prefix()
            .unwrap_err();
        assert!(error.contains("must end with `/`"), "{error}");
    }
}
