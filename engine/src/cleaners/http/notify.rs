//! Reminder notifications over the same transport as cleaner calls.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::CONTENT_TYPE;

use super::answer::{describe_transport_error, read_limited, status_label};
use super::{IDEMPOTENCY_KEY, MAX_EXCERPT_BYTES};
use crate::cleaners::signature;

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
