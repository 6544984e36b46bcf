//! Whole numbers in JSON bodies. JSON has one kind of number, and JSON Schema's `integer` is
//! any number with no fractional part, so `3.0` is the integer 3: the API reads counts in
//! either form (serde alone refuses `3.0` for an unsigned integer), as its schema promises.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// A whole number that fits in `u64`, written as an integer or a float without fraction.
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        number
            .as_u64()
            .or_else(|| number.as_f64().and_then(float_to_u64))
            .map(Self)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "{number} is not a whole number from 0 to {}",
                    u64::MAX
                ))
            })
    }
}

/// `value` when it is a whole number within `u64` (2^64 itself is the first float beyond).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "the range and the fraction are checked first"
)]
fn float_to_u64(value: f64) -> Option<u64> {
    (value.fract() == 0.0 && value >= 0.0 && value < u64::MAX as f64).then_some(value as u64)
}

/// `#[serde(deserialize_with = "whole::number")]` for an unsigned integer field.
pub fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let Whole(value) = Whole::deserialize(deserializer)?;
    T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is too large")))
}

/// `#[serde(default, deserialize_with = "whole::counts")]` for an optional map of counts.
pub fn counts<'de, D>(deserializer: D) -> Result<Option<BTreeMap<String, u64>>, D::Error>
where
    D: Deserializer<'de>,
{
    let counts = Option::<BTreeMap<String, Whole>>::deserialize(deserializer)?;
    Ok(counts.map(|counts| counts.into_iter().map(|(k, Whole(v))| (k, v)).collect()))
}

/// `#[serde(default, deserialize_with = "whole::optional")]` for an optional unsigned integer.
pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    Option::<Whole>::deserialize(deserializer)?
        .map(|Whole(value)| {
            T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is too large")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "number")]
        attempt: u32,
        #[serde(default, deserialize_with = "counts")]
        deleted: Option<BTreeMap<String, u64>>,
    }

    fn parse(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integers_written_as_floats_are_integers() {
        let body = parse(r#"{"attempt": 3.0, "deleted": {"rows": 4098.0, "files": 2}}"#).unwrap();
        assert_eq!(body.attempt, 3);
        let deleted = body.deleted.unwrap();
        assert_eq!((deleted["rows"], deleted["files"]), (4098, 2));
        assert!(parse(r#"{"attempt": 1}"#).unwrap().deleted.is_none());
        assert!(parse(r#"{"attempt": 1, "deleted": null}"#)
            .unwrap()
            .deleted
            .is_none());
    }

    #[test]
    fn fractions_negatives_and_overflow_are_refused() {
        for bad in [
            r#"{"attempt": 1.5}"#,
            r#"{"attempt": -1}"#,
            r#"{"attempt": -1.0}"#,
            r#"{"attempt": 4294967296}"#,
            r#"{"attempt": "1"}"#,
            r#"{"attempt": 1, "deleted": {"rows": 0.5}}"#,
            r#"{"attempt": 1, "deleted": {"rows": 1e20}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
