//! Batches over HTTP (`batch` in lethe.toml; docs/CLEANERS.md, "Batches"): one signed POST
//! carrying the single-call body of each request, `{"batch": [...]}`, answered per request,
//! `{"results": [...]}`. A request the answer leaves out fails alone (retryable); a non-2xx
//! answer fails every request as a single call's answer would; a 202 accepts them all.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use lethe_domain::subject::MAX_VALUE_LEN;
use lethe_domain::RequestId;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::answer::{classify, describe_transport_error, read_limited, truncate_at_char_boundary};
use super::{CallOutcome, CleanerCall, HttpCleaner, MAX_EXCERPT_BYTES, MAX_RESPONSE_BYTES};
use crate::cleaners::redact::redact;
use crate::cleaners::signature;

/// A batch's answer may be this much larger than a single call's for each request in it.
const RESPONSE_BYTES_PER_REQUEST: usize = 2 * 1024;

/// One element of `batch`: the single call's body and its `Idempotency-Key`.
#[derive(Serialize)]
struct Element<'a> {
    #[serde(flatten)]
    call: &'a CleanerCall,
    idempotency_key: String,
}

#[derive(Serialize)]
struct Body<'a> {
    batch: Vec<Element<'a>>,
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<RequestResult>,
}

/// One request's result in the answer; anything else in it is ignored.
#[derive(Deserialize)]
struct RequestResult {
    request_id: RequestId,
    #[serde(default)]
    attempt: Option<u32>,
    status: Status,
    #[serde(default)]
    deleted: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// Absent: retryable.
    #[serde(default)]
    retryable: Option<bool>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Status {
    Succeeded,
    Failed,
    Accepted,
}

impl HttpCleaner {
    /// Makes the attempts of `calls` in one signed POST; one outcome per call, in order.
    /// Never fails: every problem becomes a [`CallOutcome::Failed`].
    pub async fn call_batch(&self, calls: &[CleanerCall], now: DateTime<Utc>) -> Vec<CallOutcome> {
        let body = Body {
            batch: calls
                .iter()
                .map(|call| Element {
                    call,
                    idempotency_key: call.idempotency_key(),
                })
                .collect(),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(error) => {
                return all_failed(calls, format!("cannot encode the batch: {error}"), false)
            }
        };
        let signature = signature::sign(self.secret.as_bytes(), now.timestamp(), &body);
        let started = Instant::now();
        let sent = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signature)
            .body(body)
            .send()
            .await;
        let outcomes = match sent {
            Ok(response) => answered(response, now, calls).await,
            Err(error) => {
                let (error, retryable) = describe_transport_error(&error, self.timeout);
                all_failed(calls, error, retryable)
            }
        };
        tracing::debug!(
            requests = calls.len(),
            failed = outcomes
                .iter()
                .filter(|o| matches!(o, CallOutcome::Failed { .. }))
                .count(),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "cleaner called with a batch"
        );
        outcomes
    }
}

/// The answer read into one outcome per call.
async fn answered(
    mut response: reqwest::Response,
    now: DateTime<Utc>,
    calls: &[CleanerCall],
) -> Vec<CallOutcome> {
    let status = response.status();
    if status == StatusCode::ACCEPTED {
        let _ = read_limited(&mut response, MAX_EXCERPT_BYTES).await;
        return calls.iter().map(|_| CallOutcome::Accepted).collect();
    }
    if !status.is_success() {
        // Every identifier of the batch is redacted from the excerpt of the error body.
        let subjects: BTreeMap<String, String> = calls
            .iter()
            .enumerate()
            .flat_map(|(i, call)| {
                call.subject
                    .iter()
                    .map(move |(kind, value)| (format!("{i}.{kind}"), value.clone()))
            })
            .collect();
        let outcome = classify(response, now, &subjects).await;
        return calls.iter().map(|_| outcome.clone()).collect();
    }
    let limit = MAX_RESPONSE_BYTES + RESPONSE_BYTES_PER_REQUEST * calls.len();
    let read = read_limited(&mut response, limit).await;
    let problem = if let Some(error) = read.error {
        Some(format!("the batch's answer could not be read: {error}"))
    } else if read.truncated {
        Some(format!("the batch's answer is over {} KiB", limit / 1024))
    } else {
        None
    };
    let answer = match problem {
        Some(problem) => Err(problem),
        // The serde message names a position and an expectation, never the content.
        None => serde_json::from_slice::<Answer>(&read.bytes).map_err(|error| {
            format!(
                "the batch's answer is not JSON like {{\"results\": [{{\"request_id\": …, \
                 \"status\": \"succeeded\"}}]}}: {error}"
            )
        }),
    };
    let mut results = match answer {
        Ok(answer) => answer.results,
        // Nothing says which requests were erased: each is tried again (same Idempotency-Key).
        Err(problem) => return all_failed(calls, problem, true),
    };
    calls
        .iter()
        .map(|call| {
            let found = results.iter().position(|r| {
                r.request_id == call.request_id && r.attempt.is_none_or(|a| a == call.attempt)
            });
            match found {
                Some(index) => outcome_of(results.swap_remove(index), &call.subject),
                None => CallOutcome::Failed {
                    error: "the cleaner's answer to the batch has no result for this request"
                        .to_owned(),
                    status_code: Some(status.as_u16()),
                    retryable: true,
                    retry_after: None,
                },
            }
        })
        .collect()
}

fn outcome_of(result: RequestResult, subject: &BTreeMap<String, String>) -> CallOutcome {
    let text = |text: &str| {
        let text: String = text
            .chars()
            .take(MAX_EXCERPT_BYTES + MAX_VALUE_LEN)
            .collect();
        truncate_at_char_boundary(&redact(&text, subject), MAX_EXCERPT_BYTES).to_owned()
    };
    match result.status {
        Status::Succeeded => CallOutcome::Done {
            deleted: result.deleted,
            detail: result.detail.as_deref().map(text),
        },
        Status::Accepted => CallOutcome::Accepted,
        Status::Failed => CallOutcome::Failed {
            error: result
                .error
                .as_deref()
                .map_or_else(|| "failed (no error given)".to_owned(), text),
            status_code: None,
            retryable: result.retryable.unwrap_or(true),
            retry_after: None,
        },
    }
}

fn all_failed(calls: &[CleanerCall], error: String, retryable: bool) -> Vec<CallOutcome> {
    calls
        .iter()
        .map(|_| CallOutcome::Failed {
            error: error.clone(),
            status_code: None,
            retryable,
            retry_after: None,
        })
        .collect()
}
