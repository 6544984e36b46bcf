//! Bulk intake: `POST /v1/requests:bulk` with an NDJSON body, one submission per line, answered
//! with NDJSON, one result per non-blank input line, in input order:
//! `{"line": 3, "id": "...", "status": "pending", "created": true}` or
//! `{"line": 4, "error": {problem details naming the field}}`.
//!
//! The body is streamed: lines are read as they arrive (each at most [`MAX_LINE_BYTES`]),
//! submitted in chunks of what has arrived (one transaction each), and answered chunk by chunk, so a list of 100,000
//! requests never sits in memory. A bad line fails alone; the lines around it are accepted.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::json;

use super::json::parse;
use super::problem::Problem;
use super::{auth, AppState, SubmitBody};
use crate::requests::Submission;

/// The longest line accepted; longer lines are answered with an error and skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Lines submitted together, at most.
const CHUNK: usize = 512;

#[utoipa::path(
    post,
    path = "/v1/requests:bulk",
    tag = "requests",
    request_body(
        content = String,
        content_type = "application/x-ndjson",
        description = "One submission (as for POST /v1/requests) per line"
    ),
    responses(
        (status = 200, description = "One NDJSON result per non-blank line, in order: {line, id, status, created} or {line, error: problem}", body = String, content_type = "application/x-ndjson"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["requests:write"]))
)]
pub async fn bulk(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let principal = auth::require(state.requests.config(), &headers, "requests:write")?;
    let actor = principal.actor;
    let results = lines(body)
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| {
            let blank =
                matches!(line, Line::Text(bytes) if bytes.iter().all(u8::is_ascii_whitespace));
            async move { !blank }
        })
        // Whatever lines have arrived, up to a chunk, are submitted together (one lookup, one
        // transaction). Chunks are recorded one after another, so a subject listed twice
        // makes one request even when the two lines fall in different chunks; the next chunk
        // is parsed, validated and sealed (CPU work, on the blocking pool) meanwhile.
        .ready_chunks(CHUNK)
        .map({
            let state = state.clone();
            let actor = actor.clone();
            move |chunk| prepare(state.clone(), actor.clone(), chunk)
        })
        .buffered(2)
        .then(move |prepared| {
            let state = state.clone();
            async move { result_lines(&state, prepared).await }
        })
        .map(|lines| Ok::<_, Infallible>(Bytes::from(lines)));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(results),
    )
        .into_response())
}

/// One line of the body.
enum Line {
    Text(Vec<u8>),
    /// Longer than [`MAX_LINE_BYTES`]; its bytes were dropped as they came.
    TooLong,
}

/// Splits a streamed body into lines, holding at most one line (bounded) in memory. A read
/// error ends the stream: the client went away or sent a broken body.
fn lines(body: Body) -> impl Stream<Item = Line> {
    struct Splitter<S> {
        chunks: S,
        buffer: Vec<u8>,
        too_long: bool,
        pending: std::collections::VecDeque<Line>,
        done: bool,
    }
    let splitter = Splitter {
        chunks: body.into_data_stream(),
        buffer: Vec::new(),
        too_long: false,
        pending: std::collections::VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(splitter, |mut s| async move {
        loop {
            if let Some(line) = s.pending.pop_front() {
                return Some((line, s));
            }
            if s.done {
                return None;
            }
            match s.chunks.next().await {
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
                Some(Err(_)) => return None,
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

/// Submits the good lines of a chunk together and answers every line, in order, one NDJSON
/// line each.
/// A chunk parsed and prepared: each line's number and, for a line that did not parse, its
/// problem.
struct PreparedChunk {
    answers: Vec<(usize, Option<Result<serde_json::Value, Problem>>)>,
    /// Where each prepared submission's answer goes.
    submitted_at: Vec<usize>,
    prepared: crate::requests::Prepared,
}

/// Parses a chunk's lines and prepares its submissions ([`crate::requests::Requests::prepare`])
/// on the blocking pool.
async fn prepare(state: AppState, actor: String, chunk: Vec<(usize, Line)>) -> PreparedChunk {
    let work = move || {
        let mut answers: Vec<(usize, Option<Result<serde_json::Value, Problem>>)> =
            Vec::with_capacity(chunk.len());
        let mut submissions = Vec::with_capacity(chunk.len());
        let mut submitted_at = Vec::with_capacity(chunk.len());
        for (number, line) in chunk {
            let parsed = match line {
                Line::Text(bytes) => parse::<SubmitBody>(&bytes),
                Line::TooLong => Err(Problem::invalid(
                    "line",
                    format!("is longer than {MAX_LINE_BYTES} bytes"),
                )),
            };
            match parsed {
                Ok(body) => {
                    submitted_at.push(answers.len());
                    answers.push((number, None));
                    submissions.push((Submission::from(body), None));
                }
                Err(problem) => answers.push((number, Some(Err(problem)))),
            }
        }
        let prepared = state.requests.prepare(submissions, &actor);
        PreparedChunk {
            answers,
            submitted_at,
            prepared,
        }
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(chunk) => chunk,
        // Only a panic gets here; it is the process's bug, not the caller's.
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

async fn result_lines(state: &AppState, chunk: PreparedChunk) -> String {
    let PreparedChunk {
        mut answers,
        submitted_at,
        prepared,
    } = chunk;
    let results = state.requests.record(prepared).await;
    for (at, result) in submitted_at.into_iter().zip(results) {
        answers[at].1 = Some(result.map_err(Problem::from).map(|submitted| {
            let request = &submitted.loaded.request;
            json!({
                "id": request.id,
                "status": request.status(),
                "created": submitted.created,
            })
        }));
    }
    let mut out = String::new();
    for (number, answer) in answers {
        let value = match answer {
            Some(Ok(mut value)) => {
                value["line"] = json!(number);
                value
            }
            Some(Err(problem)) => json!({ "line": number, "error": problem }),
            None => json!({ "line": number, "error": Problem::internal() }),
        };
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}
