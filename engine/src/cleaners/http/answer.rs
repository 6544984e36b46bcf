//! Reading a cleaner's answer: the status and body turned into a [`CallOutcome`], `Retry-After`,
//! and transport errors described without the URL.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use lethe_domain::subject::MAX_VALUE_LEN;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use super::{CallOutcome, MAX_EXCERPT_BYTES, MAX_RESPONSE_BYTES};
use crate::cleaners::redact::redact;

/// What a cleaner may put in a success body; anything else in it is ignored.
#[derive(Debug, Deserialize)]
struct DoneBody {
    #[serde(default)]
    deleted: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    detail: Option<String>,
}

pub(super) async fn classify(
    mut response: reqwest::Response,
    now: DateTime<Utc>,
    subject: &BTreeMap<String, String>,
) -> CallOutcome {
    let status = response.status();
    if status == StatusCode::ACCEPTED {
        // Read (and drop) a small body so that the connection can go back to the pool.
        let _ = read_limited(&mut response, MAX_EXCERPT_BYTES).await;
        return CallOutcome::Accepted;
    }
    if status.is_success() {
        let read = read_limited(&mut response, MAX_RESPONSE_BYTES).await;
        return done_from_body(read, subject);
    }
    let headers = response.headers().clone();
    let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    let mut error = format!("HTTP {}", status_label(status));
    if status.is_redirection() {
        error
            .push_str(" (redirects are not followed; point the cleaner's url at the final address");
        if let Some(location) = header_text(&headers, LOCATION) {
            error.push_str(", Location: ");
            error.push_str(truncate_at_char_boundary(&redact(location, subject), 256));
        }
        error.push(')');
    }
    // Read a little more than is kept, so that an identifier that starts inside the excerpt
    // is whole when it is redacted.
    let read = read_limited(&mut response, MAX_EXCERPT_BYTES + MAX_VALUE_LEN).await;
    let excerpt = redact(&String::from_utf8_lossy(&read.bytes), subject);
    let kept = truncate_at_char_boundary(excerpt.trim(), MAX_EXCERPT_BYTES);
    if !kept.is_empty() {
        error.push_str(": ");
        error.push_str(kept);
        if read.truncated || kept.len() < excerpt.trim().len() {
            error.push_str(" (truncated)");
        }
    }
    let retry_after = if retryable {
        header_text(&headers, RETRY_AFTER).and_then(|value| parse_retry_after(value, now))
    } else {
        None
    };
    CallOutcome::Failed {
        error,
        status_code: Some(status.as_u16()),
        retryable,
        retry_after,
    }
}

fn done_from_body(read: Limited, subject: &BTreeMap<String, String>) -> CallOutcome {
    let note = |text: String| CallOutcome::Done {
        deleted: None,
        detail: Some(text),
    };
    if let Some(error) = read.error {
        return note(format!(
            "success status received, but the response body could not be read: {error}"
        ));
    }
    if read.truncated {
        return note(format!(
            "success status received; response body over {} KiB ignored",
            MAX_RESPONSE_BYTES / 1024
        ));
    }
    if read.bytes.iter().all(u8::is_ascii_whitespace) {
        return CallOutcome::Done {
            deleted: None,
            detail: None,
        };
    }
    match serde_json::from_slice::<DoneBody>(&read.bytes) {
        Ok(body) => CallOutcome::Done {
            deleted: body.deleted,
            detail: body.detail.map(|detail| {
                truncate_at_char_boundary(&redact(&detail, subject), MAX_EXCERPT_BYTES).to_owned()
            }),
        },
        // The serde message names a position and an expectation, never the content.
        Err(error) => note(format!(
            "success status received; response body ignored, it is not JSON like \
             {{\"deleted\": {{\"rows\": 3}}}}: {error}"
        )),
    }
}

/// A response body read up to a cap.
#[derive(Debug, Default)]
pub(super) struct Limited {
    pub(super) bytes: Vec<u8>,
    /// The body went on past the cap (the rest was not read).
    pub(super) truncated: bool,
    /// Reading failed part-way (timeout, reset).
    pub(super) error: Option<String>,
}

pub(super) async fn read_limited(response: &mut reqwest::Response, limit: usize) -> Limited {
    let mut read = Limited::default();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read.bytes.extend_from_slice(&chunk);
                if read.bytes.len() > limit {
                    read.bytes.truncate(limit);
                    read.truncated = true;
                    return read;
                }
            }
            Ok(None) => return read,
            Err(error) => {
                read.error = Some(root_cause(&error));
                return read;
            }
        }
    }
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn status_label(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(super) fn truncate_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads a `Retry-After` value: delta-seconds (`"120"`) or an HTTP-date, which is measured
/// from `now` (a date in the past means "now": zero). `None` for anything else.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(value)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The three date forms RFC 9110 requires recipients to accept.
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    // IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, is a kind of RFC 2822 date.
    if let Ok(at) = DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&Utc));
    }
    // RFC 850, `Sunday, 06-Nov-94 08:49:37 GMT`, and asctime, `Sun Nov  6 08:49:37 1994`.
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .into_iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|at| at.and_utc())
}

/// Turns a transport error into an error text and whether retrying may help. Texts name the
/// host and port, never the full URL (whose query might hold a token).
pub(super) fn describe_transport_error(
    error: &reqwest::Error,
    timeout: Duration,
) -> (String, bool) {
    let endpoint = error
        .url()
        .and_then(|url| {
            Some(format!(
                "{}:{}",
                url.host_str()?,
                url.port_or_known_default()?
            ))
        })
        .unwrap_or_else(|| "the cleaner".to_owned());
    if error.is_timeout() {
        let text = if error.is_connect() {
            format!("connecting to {endpoint} timed out")
        } else {
            format!("timed out after {}", humantime::format_duration(timeout))
        };
        return (text, true);
    }
    if error.is_connect() {
        let refused = io_error_kind(error) == Some(std::io::ErrorKind::ConnectionRefused);
        let text = if refused {
            format!("connection refused by {endpoint}")
        } else {
            format!("cannot connect to {endpoint}: {}", root_cause(error))
        };
        return (text, true);
    }
    if error.is_builder() {
        return (format!("invalid request: {}", root_cause(error)), false);
    }
    (
        format!("request to {endpoint} failed: {}", root_cause(error)),
        true,
    )
}

fn io_error_kind(error: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = cause.source();
    }
    None
}

/// The innermost cause's message: reqwest's own text repeats the URL and says little.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        assert_eq!(parse_retry_after("7", now()), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        for bad in ["", "-5", "1.5", "7s", "soon", "99999999999999999999999"] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_reads_all_three_http_date_forms() {
        let in_90s = Some(Duration::from_secs(90));
        assert_eq!(
            parse_retry_after("Sat, 01 Mar 2025 12:01:30 GMT", now()),
            in_90s
        );
        assert_eq!(
            parse_retry_after("Saturday, 01-Mar-25 12:01:30 GMT", now()),
            in_90s
        );
        assert_eq!(parse_retry_after("Sat Mar  1 12:01:30 2025", now()), in_90s);
    }

    #[test]
    fn a_retry_after_date_in_the_past_means_now() {
        assert_eq!(
            parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_at_char_boundary("abc", 5), "abc");
        assert_eq!(truncate_at_char_boundary("abcdef", 3), "abc");
        // "é" is two bytes: cutting after one byte would split it.
        assert_eq!(truncate_at_char_boundary("aé", 2), "a");
    }

    #[test]
    fn success_bodies_are_read_leniently() {
        let subject = BTreeMap::from([("email".to_owned(), "ada@example.com".to_owned())]);
        let body = |text: &str| Limited {
            bytes: text.as_bytes().to_vec(),
            ..Limited::default()
        };
        let done_from_body = |read| done_from_body(read, &subject);
        assert_eq!(
            done_from_body(body(" \n")),
            CallOutcome::Done {
                deleted: None,
                detail: None
            }
        );
        assert_eq!(
            done_from_body(body(
                r#"{"deleted":{"rows":3,"files":1},"detail":"ok","x":1}"#
            )),
            CallOutcome::Done {
                deleted: Some(BTreeMap::from([("files".into(), 1), ("rows".into(), 3)])),
                detail: Some("ok".into())
            }
        );
        let CallOutcome::Done { deleted, detail } = done_from_body(body("OK")) else {
            panic!("a 2xx is done whatever its body");
        };
        assert_eq!(deleted, None);
        assert!(detail.unwrap().contains("ignored"));
        let long_detail = format!(r#"{{"detail":"{}"}}"#, "x".repeat(2000));
        let CallOutcome::Done { detail, .. } = done_from_body(body(&long_detail)) else {
            panic!("done");
        };
        assert_eq!(detail.unwrap().len(), MAX_EXCERPT_BYTES);
        let CallOutcome::Done { detail, .. } =
            done_from_body(body(r#"{"detail":"erased ada@example.com"}"#))
        else {
            panic!("done");
        };
        assert_eq!(detail.unwrap(), "erased [redacted]");
    }
}
