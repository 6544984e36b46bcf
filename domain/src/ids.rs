//! Identifiers and names that travel through the whole system, as validated newtypes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::InvalidInput;

/// The id of one erasure request: the aggregate id and the event stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(Uuid);

impl RequestId {
    /// Wraps an id the engine generated (a UUIDv7, so ids sort by creation time).
    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RequestId {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidInput::new("id", "must be a UUID"))
    }
}

/// Checks a short machine name: lowercase ASCII letters, digits, `_` and `-`, starting with a
/// letter. Used for cleaner names, jurisdictions and subject kinds, which appear in URLs,
/// config keys and metric labels.
fn check_machine_name(field: &str, value: &str, max_len: usize) -> Result<(), InvalidInput> {
    let mut chars = value.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if value.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max_len} characters"),
        ));
    }
    if !starts_with_letter || !rest_ok {
        return Err(InvalidInput::new(
            field,
            "must start with a lowercase letter and contain only a-z, 0-9, '_' and '-'",
        ));
    }
    Ok(())
}

macro_rules! machine_name {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value` as a name of this kind.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidInput> {
                let value = value.into();
                check_machine_name($field, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidInput;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidInput;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

machine_name!(
    /// The configured name of a cleaner: a service that holds personal data and erases it.
    CleanerName,
    "cleaner",
    64
);

machine_name!(
    /// The declared name of a data store (`[[stores]]` in lethe.toml): where personal data
    /// lives, erased by one or more cleaners.
    StoreName,
    "store",
    64
);

machine_name!(
    /// A legal regime whose deadline rule applies to a request, such as `gdpr` or `ccpa`.
    Jurisdiction,
    "jurisdiction",
    32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names_reject_what_cannot_go_in_a_url_or_a_label() {
        assert!(CleanerName::parse("billing").is_ok());
        assert!(CleanerName::parse("crm-eu_2").is_ok());
        for bad in [
            "",
            "Billing",
            "2fa",
            "bill ing",
            "bill/ing",
            &"a".repeat(65),
        ] {
            let err = CleanerName::parse(bad).unwrap_err();
            assert_eq!(err.field, "cleaner", "{bad:?}");
        }
    }

    #[test]
    fn request_ids_parse_only_uuids() {
        let id = RequestId::from_uuid(Uuid::nil());
        assert_eq!(id.to_string().parse::<RequestId>().unwrap(), id);
        assert_eq!("42".parse::<RequestId>().unwrap_err().field, "id");
    }
}
