//! The HTTP cleaner protocol (docs/CLEANERS.md is its reference): one signed POST per attempt,
//! and the answer turned into a [`CallOutcome`] the workflow can act on (done, result later,
//! retry, give up).
//!
//! This module does the call and the classification only; it neither records events nor
//! schedules retries. Two rules shape it. The subject's identifiers are personal data, so they
//! travel in the request body and nowhere else: not in logs, not in error texts, not in
//! `Debug` output (a cleaner that echoes them in its answer has them replaced by
//! `[redacted]`). And a cleaner's answer is untrusted input: bodies are read with a size cap,
//! and only a bounded excerpt of an error body is kept. Redirects are never followed (a 3xx is
//! a configuration error to fix, and following one would send the subject to a host nobody
//! configured), which is why every client passed in must come from [`client`] or disable
//! redirects the same way.
//!
//! The same transport also carries reminder notifications ([`notify`]).

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use lethe_domain::subject::MAX_VALUE_LEN;
use lethe_domain::{CleanerName, RequestId};
use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::redact::redact;
use super::signature;

/// The header that makes every attempt for one request and cleaner the same operation.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// At most this many bytes of a cleaner's error body are kept in [`CallOutcome::Failed`], and
/// of its `detail` in [`CallOutcome::Done`]: enough to diagnose, too little to copy a dump of
/// someone's data into the audit log.
pub const MAX_EXCERPT_BYTES: usize = 512;

/// A success body larger than this is not read; the call still counts as done.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How long [`client`] waits for a TCP (and TLS) connection, whatever the call's own timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`client`] keeps an idle connection to a cleaner for reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What Lethe calls itself in `User-Agent`.
pub const USER_AGENT: &str = concat!("lethe/", env!("CARGO_PKG_VERSION"));

/// The shared client for cleaners and the notifier: no redirects, a `lethe/<version>` user
/// agent, a 5 s connect timeout and pooled connections. Per-call timeouts are set on each
/// request.
pub fn client() -> reqwest::Client {
    let builder = || {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
    };
    builder().build().unwrap_or_else(|error| {
        // The only way the build fails is a system root store with no usable certificate;
        // plain-http cleaners still work, https ones will fail with a TLS error that says so.
        tracing::error!(
            error = %error,
            "cannot load the system's root certificates; https cleaners will fail"
        );
        builder()
            .tls_built_in_native_certs(false)
            .build()
            .expect("a client without native roots always builds")
    })
}

/// One attempt to have one cleaner erase one subject: exactly the JSON body Lethe POSTs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanerCall {
    pub request_id: RequestId,
    pub cleaner: CleanerName,
    /// 1 for the first attempt; a cleaner may use it in its own logs, never to deduplicate.
    pub attempt: u32,
    /// Identifier kind → value (`user_id`, `email`, ...); the cleaner erases what it knows.
    pub subject: BTreeMap<String, String>,
    /// When the grace period ended and erasure became due.
    pub due_at: DateTime<Utc>,
    /// The legal deadline (a date) by which the whole request must be completed.
    pub deadline: NaiveDate,
    /// Where a cleaner that answered 202 reports the result.
    pub callback_url: String,
}

impl CleanerCall {
    /// `{request_id}:{cleaner}`: the same for every attempt, so that a cleaner can recognise a
    /// retry of work it already did.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.request_id, self.cleaner)
    }
}

impl fmt::Debug for CleanerCall {
    /// Shows which identifier kinds the subject has, never their values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanerCall")
            .field("request_id", &self.request_id)
            .field("cleaner", &self.cleaner)
            .field("attempt", &self.attempt)
            .field("subject_kinds", &self.subject.keys().collect::<Vec<_>>())
            .field("due_at", &self.due_at)
            .field("deadline", &self.deadline)
            .field("callback_url", &self.callback_url)
            .finish()
    }
}

/// What one call achieved, as far as the workflow needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The cleaner erased the subject (any 2xx but 202).
    Done {
        /// Counts the cleaner reported, e.g. `{"rows": 3}`.
        deleted: Option<BTreeMap<String, u64>>,
        /// The cleaner's `detail`, or a note that its body could not be understood.
        detail: Option<String>,
    },
    /// The cleaner took the job (202) and will report through the callback URL.
    Accepted,
    /// The attempt failed.
    Failed {
        /// What happened, without the subject; at most [`MAX_EXCERPT_BYTES`] of the body.
        error: String,
        /// The HTTP status, when the cleaner answered at all.
        status_code: Option<u16>,
        /// 429, 5xx, timeouts and network errors: try again later. Other answers will not
        /// change by retrying.
        retryable: bool,
        /// The cleaner's `Retry-After`, when it sent one we understand.
        retry_after: Option<Duration>,
    },
}

/// One configured `kind = "http"` cleaner.
#[derive(Clone)]
pub struct HttpCleaner {
    /// Must not follow redirects; see [`client`].
    client: reqwest::Client,
    url: String,
    /// The HMAC key for `Lethe-Signature`.
    secret: String,
    /// For the whole call: connect, send, and read the answer.
    timeout: Duration,
}

impl fmt::Debug for HttpCleaner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCleaner")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpCleaner {
    /// `client` must not follow redirects: pass [`client`]`()` or one built the same way.
    pub const fn new(
        client: reqwest::Client,
        url: String,
        secret: String,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            url,
            secret,
            timeout,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Makes one attempt. `now` stamps the signature and dates an HTTP-date `Retry-After`.
    /// Never fails: every problem becomes a [`CallOutcome::Failed`].
    pub async fn call(&self, call: &CleanerCall, now: DateTime<Utc>) -> CallOutcome {
        let body = match serde_json::to_vec(call) {
            Ok(body) => body,
            Err(error) => {
                return CallOutcome::Failed {
                    error: format!("cannot encode the call: {error}"),
                    status_code: None,
                    retryable: false,
                    retry_after: None,
                }
            }
        };
        let signature = signature::sign(self.secret.as_bytes(), now.timestamp(), &body);
        let started = Instant::now();
        let sent = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY, call.idempotency_key())
            .header(signature::HEADER, signature)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => classify(response, now, &call.subject).await,
            Err(error) => {
                let (error, retryable) = describe_transport_error(&error, self.timeout);
                CallOutcome::Failed {
                    error,
                    status_code: None,
                    retryable,
                    retry_after: None,
                }
            }
        };
        tracing::debug!(
            cleaner.name = %call.cleaner,
            request.id = %call.request_id,
            attempt = call.attempt,
            outcome = outcome_label(&outcome),
            http.status_code = status_of(&outcome),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "cleaner called"
        );
        outcome
    }
}

fn outcome_label(outcome: &CallOutcome) -> &'static str {
    match outcome {
        CallOutcome::Done { .. } => "done",
        CallOutcome::Accepted => "accepted",
        CallOutcome::Failed {
            retryable: true, ..
        } => "failed_retryable",
        CallOutcome::Failed { .. } => "failed",
    }
}

const fn status_of(outcome: &CallOutcome) -> Option<u16> {
    match outcome {
        CallOutcome::Failed { status_code, .. } => *status_code,
        CallOutcome::Done { .. } | CallOutcome::Accepted => None,
    }
}

/// What a cleaner may put in a success body; anything else in it is ignored.
#[derive(Debug, Deserialize)]
struct DoneBody {
    #[serde(default)]
    deleted: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    detail: Option<String>,
}

async fn classify(
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
struct Limited {
    bytes: Vec<u8>,
    /// The body went on past the cap (the rest was not read).
    truncated: bool,
    /// Reading failed part-way (timeout, reset).
    error: Option<String>,
}

async fn read_limited(response: &mut reqwest::Response, limit: usize) -> Limited {
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

fn status_label(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate_at_char_boundary(text: &str, max: usize) -> &str {
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
fn describe_transport_error(error: &reqwest::Error, timeout: Duration) -> (String, bool) {
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

/// Sends a reminder to the notifier: POST of `body` as JSON, signed like a cleaner call when a
/// secret is configured, with `idempotency_key` in `Idempotency-Key` (the same on every call
/// for one reminder, so that the notifier can drop a repeat: a call whose acceptance was not
/// recorded before a crash is made again). Any 2xx is success; anything else is an error with a short reason:
/// the status, or what went wrong on the wire. The notifier's answer is not quoted, since a
/// notification names the subject and the answer may echo it.
pub async fn notify(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    body: &serde_json::Value,
    idempotency_key: &str,
    timeout: Duration,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(body).map_err(|e| format!("cannot encode: {e}"))?;
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header(CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_KEY, idempotency_key);
    if let Some(secret) = secret {
        request = request.header(
            signature::HEADER,
            signature::sign(secret.as_bytes(), now.timestamp(), &bytes),
        );
    }
    let mut response = request
        .body(bytes)
        .send()
        .await
        .map_err(|error| describe_transport_error(&error, timeout).0)?;
    // Drained so that the connection can be reused.
    let _ = read_limited(&mut response, MAX_EXCERPT_BYTES).await;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status_label(status)))
    }
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

    #[test]
    fn debug_output_hides_the_subject_and_the_secret() {
        let call = CleanerCall {
            request_id: RequestId::from_uuid(uuid::Uuid::nil()),
            cleaner: CleanerName::parse("billing").unwrap(),
            attempt: 1,
            subject: BTreeMap::from([("email".into(), "ada@example.com".into())]),
            due_at: now(),
            deadline: now().date_naive(),
            callback_url: "http://lethe/cb".into(),
        };
        let shown = format!("{call:?}");
        assert!(shown.contains("email"), "{shown}");
        assert!(!shown.contains("ada@example.com"), "{shown}");
        let cleaner = HttpCleaner::new(
            client(),
            "http://x".into(),
            "topsecret".into(),
            Duration::from_secs(1),
        );
        assert!(!format!("{cleaner:?}").contains("topsecret"));
    }
}
