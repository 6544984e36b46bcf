//! `lethe audit verify-export`: an export checked from the file alone, with no database and no
//! key. Every request's hash chain is recomputed with the store's own definition of the hash
//! ([`verify_chain`]) from the fields the file carries, checked against the head the file
//! records for it, and each request's links to its neighbours are checked against the lines
//! around it. Every finding names the line of the file, the request and, where an event is at
//! fault, its version and log position.
//!
//! One request is in memory at a time, whatever the size of the file.

use std::fmt;
use std::io::BufRead;

use lethe_domain::RequestId;
use serde::Deserialize;

use super::audit::ExportFormat;
use super::export_file::{ExportedEvent, Links, CSV_HEADER};
use crate::store::{verify_chain, RecordedEvent};

/// One thing wrong with an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFinding {
    /// The line of the file (1 is the first; a CSV file's header is line 1).
    pub line: u64,
    pub request_id: Option<RequestId>,
    /// The event at fault, when one is: its version and its position in the log.
    pub event: Option<(i64, i64)>,
    pub problem: String,
}

impl fmt::Display for ExportFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(id) = self.request_id {
            write!(f, ": request {id}")?;
        }
        if let Some((version, position)) = self.event {
            write!(f, " at version {version} (position {position})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// What the check of an export found.
#[derive(Debug)]
pub struct ExportCheck {
    pub format: ExportFormat,
    pub requests: u64,
    pub events: u64,
    pub findings: Vec<ExportFinding>,
}

/// An export that cannot be read at all (as opposed to one that reads but does not verify).
#[derive(Debug, thiserror::Error)]
pub enum ExportReadError {
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a Lethe CSV export: {0}")]
    Csv(String),
}

/// Checks an export read from `input`, JSONL or CSV (told apart by its first character: a
/// JSONL export's lines are objects).
pub fn verify_export(mut input: impl BufRead) -> Result<ExportCheck, ExportReadError> {
    let jsonl = match input.fill_buf()?.first() {
        None | Some(b'{') => true,
        Some(_) => false,
    };
    if jsonl {
        verify_jsonl(input)
    } else {
        verify_csv(input)
    }
}

/// One request as read back: where it starts, its links and its events with their lines.
struct ReadRequest {
    line: u64,
    id: RequestId,
    links: Links,
    events: Vec<(u64, RecordedEvent)>,
}

/// What the previous line (or group of rows) left for the next one's links to match.
enum Before {
    /// Nothing yet: the next request is the export's first.
    Start,
    /// A request, where it was and which request it names next.
    Request {
        id: RequestId,
        line: u64,
        next: Option<RequestId>,
    },
    /// A line that could not be read: the next request's links are not checked against it.
    Unreadable,
}

/// The running check.
struct Checker {
    check: ExportCheck,
    before: Before,
}

impl Checker {
    fn new(format: ExportFormat) -> Self {
        Self {
            check: ExportCheck {
                format,
                requests: 0,
                events: 0,
                findings: Vec::new(),
            },
            before: Before::Start,
        }
    }

    fn finding(&mut self, line: u64, request_id: Option<RequestId>, problem: String) {
        self.check.findings.push(ExportFinding {
            line,
            request_id,
            event: None,
            problem,
        });
    }

    fn unreadable(&mut self, line: u64, request_id: Option<RequestId>, problem: String) {
        self.finding(line, request_id, problem);
        self.before = Before::Unreadable;
    }

    /// One whole request: its chain against its head, then its place among its neighbours.
    fn request(&mut self, request: ReadRequest) {
        self.check.requests += 1;
        self.check.events += request.events.len() as u64;
        let ReadRequest {
            line,
            id,
            links,
            events,
        } = request;
        let (lines, events): (Vec<u64>, Vec<RecordedEvent>) = events.into_iter().unzip();
        let head = links.head();
        if head.is_none() {
            self.finding(
                line,
                Some(id),
                "the export records no head (head_version, head_hash) for this request".to_owned(),
            );
        }
        if let Err(broken) = verify_chain(&events, head.as_ref()) {
            let at = events
                .iter()
                .position(|e| e.version == broken.version && e.position == broken.position)
                .map_or(line, |i| lines[i]);
            self.check.findings.push(ExportFinding {
                line: at,
                request_id: Some(id),
                event: Some((broken.version, broken.position)),
                problem: broken.problem,
            });
        }
        self.links(line, id, &links);
    }

    /// Checks that this request follows the one before it as both their links say.
    fn links(&mut self, line: u64, id: RequestId, links: &Links) {
        let claimed = links.previous_request_id;
        let problem = match &self.before {
            Before::Unreadable => None,
            Before::Start => claimed.map(|missing| {
                format!(
                    "request {missing} is listed before this one, the first, but is not there \
                     (a line was removed or lines were reordered)"
                )
            }),
            Before::Request {
                id: before,
                line: before_line,
                next,
            } => {
                if *next == Some(id) && claimed == Some(*before) {
                    None
                } else if next.is_some() && *next == claimed {
                    Some(format!(
                        "{} is listed between request {before} (line {before_line}) and this \
                         one but is not there (a line was removed or lines were reordered)",
                        name(claimed)
                    ))
                } else {
                    Some(format!(
                        "this request does not follow request {before} (line {before_line}): \
                         that line names {} next and this one names {} before it (lines were \
                         removed or reordered)",
                        name(*next),
                        name(claimed)
                    ))
                }
            }
        };
        if let Some(problem) = problem {
            self.finding(line, Some(id), problem);
        }
        self.before = Before::Request {
            id,
            line,
            next: links.next_request_id,
        };
    }

    /// The end of the file: the last request must name none after it.
    fn finish(mut self) -> ExportCheck {
        if let Before::Request {
            id,
            line,
            next: Some(missing),
        } = self.before
        {
            self.finding(
                line,
                Some(id),
                format!(
                    "request {missing} is listed after this one, the last, but is not there \
                     (a line was removed)"
                ),
            );
        }
        self.check
    }
}

fn name(id: Option<RequestId>) -> String {
    id.map_or_else(|| "no request".to_owned(), |id| format!("request {id}"))
}

/// A JSONL export's line: the request, its links and its events.
#[derive(Deserialize)]
struct JsonlRequest {
    request_id: RequestId,
    #[serde(flatten)]
    links: Links,
    events: Vec<ExportedEvent>,
}

fn verify_jsonl(input: impl BufRead) -> Result<ExportCheck, ExportReadError> {
    let mut checker = Checker::new(ExportFormat::Jsonl);
    for (line, text) in (1_u64..).zip(input.lines()) {
        let text = text?;
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<JsonlRequest>(&text) {
            Ok(request) => {
                let id = request.request_id;
                checker.request(ReadRequest {
                    line,
                    id,
                    links: request.links,
                    events: request
                        .events
                        .into_iter()
                        .map(|e| (line, e.into_recorded(id)))
                        .collect(),
                });
            }
            Err(error) => {
                // Name the request if the line says which it is.
                let id = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| serde_json::from_value(v["request_id"].clone()).ok());
                checker.unreadable(line, id, format!("not a request of an export: {error}"));
            }
        }
    }
    Ok(checker.finish())
}

/// A CSV export's row, by column name (the verdict columns are the exporter's and not read).
#[derive(Deserialize)]
struct CsvRow {
    request_id: RequestId,
    position: i64,
    version: i64,
    #[serde(rename = "type")]
    event_type: String,
    recorded_at: chrono::DateTime<chrono::Utc>,
    actor: String,
    /// Empty when the event has none (Lethe's command ids are never empty).
    command_id: Option<String>,
    correlation_id: uuid::Uuid,
    data: String,
    prev_hash: String,
    hash: String,
    causation_id: Option<uuid::Uuid>,
    event_id: uuid::Uuid,
    schema_version: i32,
    head_version: Option<i64>,
    head_hash: Option<String>,
    previous_request_id: Option<RequestId>,
    next_request_id: Option<RequestId>,
}

impl CsvRow {
    fn into_event(self) -> Result<(RequestId, Links, RecordedEvent), String> {
        let data = serde_json::from_str(&self.data)
            .map_err(|e| format!("the data column is not JSON: {e}"))?;
        let event = ExportedEvent {
            position: self.position,
            version: self.version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            actor: self.actor,
            event_id: self.event_id,
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            data,
            prev_hash: self.prev_hash,
            hash: self.hash,
        };
        let links = Links {
            head_version: self.head_version,
            head_hash: self.head_hash,
            previous_request_id: self.previous_request_id,
            next_request_id: self.next_request_id,
        };
        Ok((self.request_id, links, event.into_recorded(self.request_id)))
    }
}

fn verify_csv(input: impl BufRead) -> Result<ExportCheck, ExportReadError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ExportReadError::Csv(e.to_string()))?
        .clone();
    if let Some(missing) = CSV_HEADER
        .iter()
        .find(|c| !headers.iter().any(|h| h == **c))
    {
        return Err(ExportReadError::Csv(format!(
            "the header has no column {missing:?} (an export carries {})",
            CSV_HEADER.join(",")
        )));
    }
    let mut checker = Checker::new(ExportFormat::Csv);
    let mut current: Option<ReadRequest> = None;
    for record in reader.records() {
        let record = record.map_err(|e| ExportReadError::Csv(e.to_string()))?;
        let line = record.position().map_or(0, csv::Position::line);
        let row = record
            .deserialize::<CsvRow>(Some(&headers))
            .map_err(|e| e.to_string())
            .and_then(CsvRow::into_event);
        let (id, links, event) = match row {
            Ok(row) => row,
            Err(problem) => {
                if let Some(done) = current.take() {
                    checker.request(done);
                }
                let id = headers
                    .iter()
                    .position(|h| h == "request_id")
                    .and_then(|i| record.get(i)?.parse().ok());
                checker.unreadable(line, id, format!("not an event of an export: {problem}"));
                continue;
            }
        };
        match &mut current {
            Some(request) if request.id == id => {
                if request.links != links {
                    checker.finding(
                        line,
                        Some(id),
                        format!(
                            "the head and links of this row differ from those of the request's \
                             first row (line {})",
                            request.line
                        ),
                    );
                }
                request.events.push((line, event));
            }
            _ => {
                if let Some(done) = current.take() {
                    checker.request(done);
                }
                current = Some(ReadRequest {
                    line,
                    id,
                    links,
                    events: vec![(line, event)],
                });
            }
        }
    }
    if let Some(done) = current {
        checker.request(done);
    }
    Ok(checker.finish())
}
