//! Bulk intake: `POST /v1/requests:bulk` with an NDJSON body, one submission per line, answered
//! with NDJSON, one result per non-blank input line, in input order:
//! `{"line": 3, "id": "...", "status": "pending", "created": true}` or
//! `{"line": 4, "error": {problem details naming the field}}`.
//!
//! The body is streamed: lines are read as they arrive (each at most [`MAX_LINE_BYTES`]) and
//! handed to the application service's bulk intake ([`crate::app::bulk`]), which submits them
//! in chunks of what has arrived and answers chunk by chunk, so a list of 100,000 requests
//! never sits in memory. A bad line fails alone; the lines around it are accepted.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::json;

use super::auth::{Caller, RequestsWrite};
use super::json::parse;
use super::problem::Problem;
use super::schema::BulkResult;
use super::{idempotency_key, AppState, SubmitBody};
use crate::app::bulk::{Answers, LineAnswer};
use crate::app::Submission;

/// The longest line accepted; longer lines are answered with an error and skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

#[utoipa::path(
    post,
    path = "/v1/requests:bulk",
    tag = "requests",
    request_body(
        content = Option<Vec<SubmitBody>>,
        content_type = "application/x-ndjson",
        description = "NDJSON: one submission (as for POST /v1/requests) per line, each item of \
                       this array on a line of its own. Blank lines are skipped; an empty body \
                       submits nothing. A line that is not a valid submission is answered with \
                       its error (in the 200 answer) and the others are still submitted."
    ),
    params(super::schema::IdempotencyKey),
    responses(
        (status = 200, description = "NDJSON: one result per non-blank line, in input order: `{line, id, status, created}` or `{line, error: problem}`; a body cut short (stalled or broken) ends with `{error: problem}`", body = Vec<BulkResult>, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        super::responses::Guarded,
    ),
    security(("bearer" = ["requests:write"]))
)]
pub async fn bulk(
    State(state): State<AppState>,
    Caller(principal, _): Caller<RequestsWrite>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let actor = principal.actor;
    let key = idempotency_key(&headers)?.map(str::to_owned);
    let ended = Arc::new(OnceLock::new());
    let idle = state.requests.config().api.body_idle_timeout();
    let lines = lines(body, idle, ended.clone())
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| {
            let blank =
                matches!(line, Line::Text(bytes) if bytes.iter().all(u8::is_ascii_whitespace));
            async move { !blank }
        })
        .map(|(number, line)| {
            let line = match line {
                Line::Text(bytes) => Ok(bytes),
                Line::TooLong => Err(Problem::invalid(
                    "line",
                    format!("is longer than {MAX_LINE_BYTES} bytes"),
                )),
            };
            (number, line)
        });
    let answers = state
        .requests
        .bulk(lines, parse_line, actor, key)
        .map(|answers| Ok::<_, Infallible>(Bytes::from(render(answers))));
    // Every line read is answered; a body cut short says so last.
    let cut = futures::stream::once(async move {
        ended.get().map(|cut| {
            let mut line = json!({ "error": cut.problem() }).to_string();
            line.push('\n');
            Ok::<_, Infallible>(Bytes::from(line))
        })
    })
    .filter_map(futures::future::ready);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(answers.chain(cut)),
    )
        .into_response())
}

/// A line as a submission, or the problem with it.
fn parse_line(bytes: &[u8]) -> Result<Submission, Problem> {
    parse::<SubmitBody>(bytes).map(Submission::from)
}

/// How the body ended when it did not end well: the last line of the answer says so, after
/// the answers of every line read before.
#[derive(Debug)]
enum Cut {
    /// No byte arrived for the idle time-out.
    Stalled { idle: Duration, partial: bool },
    /// The body could not be read (the connection broke, a bad chunk encoding).
    Broken { partial: bool },
}

impl Cut {
    fn problem(&self) -> Problem {
        let partial = |partial: bool| {
            if partial {
                "; the unfinished line at its end was not read"
            } else {
                ""
            }
        };
        match self {
            Self::Stalled { idle, partial: p } => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "urn:lethe:problem:body-stalled",
                "Body stalled",
                format!(
                    "no byte of the body arrived for {} s, so it was cut short; every line \
                     before is answered above{}",
                    idle.as_secs_f64(),
                    partial(*p)
                ),
            ),
            Self::Broken { partial: p } => Problem::new(
                StatusCode::BAD_REQUEST,
                "urn:lethe:problem:unreadable-body",
                "Unreadable body",
                format!(
                    "the body broke off before its end; every line before is answered above{}",
                    partial(*p)
                ),
            ),
        }
    }
}

/// One line of the body.
enum Line {
    Text(Vec<u8>),
    /// Longer than [`MAX_LINE_BYTES`]; its bytes were dropped as they came.
    TooLong,
}

/// Splits a streamed body into lines, holding at most one line (bounded) in memory. A read
/// error, or no byte for `idle`, ends the stream, and `ended` says why; an unfinished last
/// line is then dropped, as it may be cut anywhere.
fn lines(body: Body, idle: Duration, ended: Arc<OnceLock<Cut>>) -> impl Stream<Item = Line> {
    struct Splitter<S> {
        chunks: S,
        buffer: Vec<u8>,
        too_long: bool,
        pending: VecDeque<Line>,
        done: bool,
        idle: Duration,
        ended: Arc<OnceLock<Cut>>,
    }
    let splitter = Splitter {
        chunks: body.into_data_stream(),
        buffer: Vec::new(),
        too_long: false,
        pending: VecDeque::new(),
        done: false,
        idle,
        ended,
    };
    futures::stream::unfold(splitter, |mut s| async move {
        loop {
            if let Some(line) = s.pending.pop_front() {
                return Some((line, s));
            }
            if s.done {
                return None;
            }
            let Ok(next) = tokio::time::timeout(s.idle, s.chunks.next()).await else {
                let partial = s.too_long || !s.buffer.is_empty();
                let idle = s.idle;
                let _ = s.ended.set(Cut::Stalled { idle, partial });
                return None;
            };
            match next {
                Some(Ok(chunk)) => {
                    let mut rest: &[u8] = &chunk;
                    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                        let (head, tail) = rest.split_at(end);
                        if !s.too_long && s.buffer.len() + head.len() <= MAX_LINE_BYTES {
                            s.buffer.extend_from_slice(head);
                            s.pending
                                .push_back(Line::Text(std::mem::take(&mut s.buffer)));
                        } else {
                            s.buffer.clear();
                            s.pending.push_back(Line::TooLong);
                        }
                        s.too_long = false;
                        rest = &tail[1..];
                    }
                    if !s.too_long && s.buffer.len() + rest.len() <= MAX_LINE_BYTES {
                        s.buffer.extend_from_slice(rest);
                    } else {
                        s.buffer.clear();
                        s.too_long = true;
                    }
                }
                Some(Err(_)) => {
                    let partial = s.too_long || !s.buffer.is_empty();
                    let _ = s.ended.set(Cut::Broken { partial });
                    return None;
                }
                None => {
                    s.done = true;
                    if s.too_long {
                        s.pending.push_back(Line::TooLong);
                    } else if !s.buffer.is_empty() {
                        s.pending
                            .push_back(Line::Text(std::mem::take(&mut s.buffer)));
                    }
                }
            }
        }
    })
}

/// A chunk's answer lines, in input order: `{"id", "status", "created", "line"}` or
/// `{"line", "error": problem}`.
fn render(answers: Answers<Problem>) -> String {
    let mut out = String::new();
    for (number, answer) in answers {
        let value = match answer {
            LineAnswer::Accepted {
                id,
                status,
                created,
            } => {
                let mut value = json!({
                    "id": id,
                    "status": status,
                    "created": created,
                });
                value["line"] = json!(number);
                value
            }
            LineAnswer::Invalid(problem) => json!({ "line": number, "error": problem }),
            LineAnswer::Failed(error) => json!({ "line": number, "error": Problem::from(error) }),
            LineAnswer::Lost => json!({ "line": number, "error": Problem::internal() }),
        };
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}
