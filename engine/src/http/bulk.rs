//! Bulk intake: `POST /v1/requests:bulk` with an NDJSON body, one submission per line, answered
//! with NDJSON, one result per non-blank input line, in input order:
//! `{"line": 3, "id": "...", "status": "pending", "created": true}` or
//! `{"line": 4, "error": {problem details naming the field}}`.
//!
//! The body is streamed: lines are read as they arrive (each at most [`MAX_LINE_BYTES`]),
//! submitted in chunks of what has arrived (one transaction each), and answered chunk by chunk, so a list of 100,000
//! requests never sits in memory. A bad line fails alone; the lines around it are accepted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use serde_json::json;

use super::auth::{Caller, RequestsWrite};
use super::json::parse;
use super::problem::Problem;
use super::schema::BulkResult;
use super::{idempotency_key, AppState, SubmitBody};
use crate::app::{LoadedRequest, Recorded, Submission, Written};

/// The longest line accepted; longer lines are answered with an error and skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Lines submitted together, at most.
const CHUNK: usize = 512;
/// Chunks being written at once, at most.
const IN_FLIGHT: usize = 2;

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
    let prepared = lines(body, idle, ended.clone())
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| {
            let blank =
                matches!(line, Line::Text(bytes) if bytes.iter().all(u8::is_ascii_whitespace));
            async move { !blank }
        })
        // Whatever lines have arrived, up to a chunk, are submitted together (one lookup, one
        // transaction); the next chunk is parsed, validated and sealed (CPU work, on the
        // blocking pool) meanwhile.
        .ready_chunks(CHUNK)
        .map({
            let state = state.clone();
            move |chunk| prepare(state.clone(), actor.clone(), key.clone(), chunk)
        })
        .buffered(2);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(record_in_order(state, prepared, ended)),
    )
        .into_response())
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

/// Records prepared chunks with up to [`IN_FLIGHT`] of them being written at once, and yields
/// each chunk's answer lines in input order.
///
/// A chunk is looked up while the chunks before it are still being written, so that the
/// database never waits for the lookup, nor the lookup for a commit. The lookup cannot see
/// requests not yet committed: a subject that one of the chunks in flight records is
/// recognised from that chunk's blind indexes, kept in memory until its write ends, and the
/// line gets that chunk's request. So a subject listed twice still makes one request.
///
/// The writes run as tasks of their own: a client that goes away stops the intake after the
/// chunks already submitted, which are written in full.
fn record_in_order(
    state: AppState,
    prepared: impl Stream<Item = PreparedChunk> + Send + 'static,
    ended: Arc<OnceLock<Cut>>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<Bytes, Infallible>>(1);
    tokio::spawn(async move {
        let mut prepared = std::pin::pin!(prepared);
        let mut writing: VecDeque<(WriteTask, Arc<HashSet<String>>)> = VecDeque::new();
        // The requests created by the chunks answered last, by the blind indexes of their
        // subjects: the chunks that were in flight while any chunk still to answer was looked
        // up.
        let mut recent: VecDeque<Created> = VecDeque::new();
        loop {
            let next = prepared.next().await;
            let done = next.is_none();
            let resolved = match next {
                Some(chunk) => {
                    let unwritten: Vec<_> = writing.iter().map(|(_, s)| s.clone()).collect();
                    let resolved = state.requests.resolve(chunk.prepared, &unwritten).await;
                    Some((chunk.answers, chunk.submitted_at, resolved))
                }
                None => None,
            };
            while writing.len() >= if done { 1 } else { IN_FLIGHT } {
                let Some((task, _)) = writing.pop_front() else {
                    break;
                };
                let lines = match task.await {
                    Ok(written) => answer(written, &mut recent),
                    Err(error) => std::panic::resume_unwind(error.into_panic()),
                };
                if sender.send(Ok(Bytes::from(lines))).await.is_err() {
                    return; // the client went away
                }
            }
            let Some((answers, submitted_at, resolved)) = resolved else {
                // Every line read is answered; a body cut short says so last.
                if let Some(cut) = ended.get() {
                    let mut line = json!({ "error": cut.problem() }).to_string();
                    line.push('\n');
                    let _ = sender.send(Ok(Bytes::from(line))).await;
                }
                return;
            };
            let subjects = Arc::new(resolved.new_subjects());
            let requests = state.requests.clone();
            let task = tokio::spawn(async move {
                WrittenChunk {
                    answers,
                    submitted_at,
                    written: requests.write(resolved).await,
                }
            });
            writing.push_back((task, subjects));
        }
    });
    receiver
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

/// A chunk parsed and prepared: each line's number and, for a line that did not parse, its
/// problem.
struct PreparedChunk {
    answers: Vec<(usize, Option<Result<serde_json::Value, Problem>>)>,
    /// Where each prepared submission's answer goes.
    submitted_at: Vec<usize>,
    prepared: crate::app::Prepared,
}

/// Parses a chunk's lines and prepares its submissions ([`crate::app::Requests::prepare`])
/// on the blocking pool.
///
/// With an `Idempotency-Key`, line N's command id is `bulk:<actor>:<key>:<N>`: a retried
/// upload answers each line with the request its first upload made (`created: false`).
async fn prepare(
    state: AppState,
    actor: String,
    key: Option<String>,
    chunk: Vec<(usize, Line)>,
) -> PreparedChunk {
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
                    let retry_id = key
                        .as_ref()
                        .map(|key| format!("bulk:{actor}:{key}:{number}"));
                    submissions.push((Submission::from(body), retry_id));
                }
                Err(problem) => answers.push((number, Some(Err(problem)))),
            }
        }
        let prepared = state.requests.prepare_with_ids(submissions, &actor);
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

/// A chunk after its write: its lines' answers so far and what the write answered.
struct WrittenChunk {
    answers: Vec<(usize, Option<Result<serde_json::Value, Problem>>)>,
    submitted_at: Vec<usize>,
    written: Written,
}

type WriteTask = tokio::task::JoinHandle<WrittenChunk>;

/// The requests a chunk created, by the blind indexes of their subjects.
struct Created {
    by_subject: HashMap<String, usize>,
    requests: Vec<Option<LoadedRequest>>,
}

impl Created {
    fn get(&self, blind_index: &str) -> Option<&LoadedRequest> {
        let at = *self.by_subject.get(blind_index)?;
        self.requests.get(at)?.as_ref()
    }
}

/// A written chunk's answer lines. What it created joins `recent`, which keeps that of the
/// last [`IN_FLIGHT`] chunks.
fn answer(chunk: WrittenChunk, recent: &mut VecDeque<Created>) -> String {
    let WrittenChunk {
        mut answers,
        submitted_at,
        written,
    } = chunk;
    let Recorded {
        results,
        new_subjects,
    } = written.finish(|index| recent.iter().find_map(|chunk| chunk.get(index)));
    let mut requests = Vec::with_capacity(results.len());
    for (at, result) in submitted_at.into_iter().zip(results) {
        let (answer, created) = match result {
            Ok(submitted) => {
                let request = &submitted.loaded.request;
                let answer = json!({
                    "id": request.id,
                    "status": request.status(),
                    "created": submitted.created,
                });
                (Ok(answer), submitted.created.then_some(submitted.loaded))
            }
            Err(error) => (Err(Problem::from(error)), None),
        };
        answers[at].1 = Some(answer);
        requests.push(created);
    }
    if recent.len() >= IN_FLIGHT {
        recent.pop_front();
    }
    recent.push_back(Created {
        by_subject: new_subjects,
        requests,
    });
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
