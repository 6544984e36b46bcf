//! A JSON body extractor whose errors name the field at fault.
//!
//! Any content type is accepted (so `curl -d '{...}'` works without a header); the body must
//! be a JSON document for the target type, unknown fields included in what is rejected.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::problem::Problem;
use super::MAX_BODY_BYTES;

#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read(request, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], for bodies that may be left out: an empty body is `None`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        parse(&bytes).map(|value| Self(Some(value)))
    }
}

/// The body's bytes, read with the same limit, for a handler that chooses the type to parse
/// them as ([`parse`]) from what they hold.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        read(request, state).await.map(Self)
    }
}

/// The whole body, at most [`MAX_BODY_BYTES`]. A declared `Content-Length` over the limit is
/// refused before a byte is read: waiting for ten gigabytes that will be refused anyway would
/// hold the connection until the request times out.
async fn read<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, Problem> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            status => Problem::new(
                status,
                "urn:lethe:problem:unreadable-body",
                "Unreadable body",
                rejection.body_text(),
            ),
        })
}

fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "urn:lethe:problem:too-large",
        "Body too large",
        format!("the body must be at most {MAX_BODY_BYTES} bytes"),
    )
}

/// Parses `bytes` as JSON into `T`, naming the field of the first error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(Problem::invalid("body", "is empty; send a JSON object")),
        // Serde would fill a struct from an array by field order; only objects are accepted.
        Some(b'{') => {}
        Some(_) => return Err(Problem::invalid("body", "must be a JSON object")),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        // The path leads to the value at fault; for a missing field it stops at the parent.
        let unreadable = inner.is_syntax() || inner.is_eof();
        let field = match (path.as_str(), missing_field(&message)) {
            _ if unreadable => "body".to_owned(),
            (".", Some(name)) => name.to_owned(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (".", None) => "body".to_owned(),
            (path, None) => path.to_owned(),
        };
        let detail = if unreadable {
            format!("is not valid JSON ({message})")
        } else {
            message
        };
        Problem::invalid(field, detail)
    })?;
    // Whatever follows the value (a second object, stray bytes) would otherwise be ignored:
    // the body must be one JSON value, only whitespace after it.
    deserializer.end().map_err(|error| {
        Problem::invalid(
            "body",
            format!("must be exactly one JSON value; more follows it ({error})"),
        )
    })?;
    Ok(value)
}

/// The field serde names in "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        subject: BTreeMap<String, String>,
        tags: Option<Vec<String>>,
    }

    fn field_of(json: &str) -> String {
        parse::<Body>(json.as_bytes()).unwrap_err().field.unwrap()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("{}"), "subject");
        assert_eq!(field_of(r#"{"subject": {}, "colour": 1}"#), "colour");
        assert_eq!(
            field_of(r#"{"subject": {"user_id": 42}}"#),
            "subject.user_id"
        );
        assert_eq!(field_of(r#"{"subject": {}, "tags": [1]}"#), "tags[0]");
        assert_eq!(field_of(r#"{"subject": "#), "body");
        assert_eq!(field_of(""), "body");
        assert_eq!(field_of("[]"), "body");
        assert_eq!(
            field_of(r#"{"subject": {"a": "b"}, "tags": ["x"], "extra": {}}"#),
            "extra"
        );
    }

    #[test]
    fn a_body_is_exactly_one_value() {
        for body in [
            r#"{"subject":{"a":"b"}}garbage"#,
            r#"{"subject":{"a":"b"}}{"subject":{"a":"b"}}"#,
            r#"{"subject":{"a":"b"}} 1"#,
            "{\"subject\":{\"a\":\"b\"}}\n\u{0}",
        ] {
            let problem = parse::<Body>(body.as_bytes()).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some("body"), "{body}");
            assert_eq!(problem.status, 400);
        }
        assert!(parse::<Body>(b"{\"subject\":{\"a\":\"b\"}} \r\n\t ").is_ok());
    }
}
