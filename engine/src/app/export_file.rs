//! The audit export's file, in both its formats: what a request and each of its events look
//! like in it, written by `lethe audit export` and read back by `lethe audit verify-export`.
//!
//! Every field the hash chain covers is in the file (the request id, and each event's
//! version, type, schema version, ids, actor, time and data) with its `prev_hash` and `hash`,
//! so the chain can be recomputed from the file alone. Beside them each request carries its
//! recorded head (so events removed from its end show) and the ids of the requests before and
//! after it in the export (so a removed or moved request shows, named).

use chrono::{DateTime, Utc};
use lethe_domain::RequestId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::RequestError;
use crate::store::{ChainBreak, RecordedEvent, StreamHead};

/// The format of `lethe audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per request: its events and the verdict of its hash chain.
    Jsonl,
    /// One row per event, with the request's verdict on every row.
    Csv,
}

/// One event as exported: everything stored about it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedEvent {
    pub position: i64,
    pub version: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub event_id: Uuid,
    pub command_id: Option<String>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub data: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl ExportedEvent {
    fn of(event: &RecordedEvent) -> Self {
        Self {
            position: event.position,
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event.recorded_at,
            actor: event.actor.clone(),
            event_id: event.event_id,
            command_id: event.command_id.clone(),
            correlation_id: event.correlation_id,
            causation_id: event.causation_id,
            data: event.payload.clone(),
            prev_hash: event.prev_hash.clone(),
            hash: event.hash.clone(),
        }
    }

    /// The stored event this line stands for, as the chain hashes it (the transaction id is
    /// not exported: nothing hashes it).
    pub fn into_recorded(self, stream_id: RequestId) -> RecordedEvent {
        RecordedEvent {
            position: self.position,
            transaction_id: 0,
            stream_id,
            version: self.version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload: self.data,
            event_id: self.event_id,
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor,
            recorded_at: self.recorded_at,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// What the export says of one request beside its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The recorded head of its stream when exported.
    pub head_version: Option<i64>,
    pub head_hash: Option<String>,
    /// The requests before and after it in the export (none at the ends).
    pub previous_request_id: Option<RequestId>,
    pub next_request_id: Option<RequestId>,
}

impl Links {
    pub fn head(&self) -> Option<StreamHead> {
        Some(StreamHead {
            version: self.head_version?,
            last_hash: self.head_hash.clone()?,
        })
    }
}

/// One request of the export, read from the store.
pub(super) struct ExportedRequest {
    pub row: super::queries::RequestRow,
    pub head: Option<StreamHead>,
    pub events: Vec<RecordedEvent>,
    pub verdict: Result<(), ChainBreak>,
    pub previous: Option<RequestId>,
}

/// The columns of a CSV export: the first thirteen as before the file carried the whole
/// chain, the rest after them.
pub const CSV_HEADER: [&str; 20] = [
    "request_id",
    "verified",
    "chain_error",
    "position",
    "version",
    "type",
    "recorded_at",
    "actor",
    "command_id",
    "correlation_id",
    "data",
    "prev_hash",
    "hash",
    "causation_id",
    "event_id",
    "schema_version",
    "head_version",
    "head_hash",
    "previous_request_id",
    "next_request_id",
];

/// `recorded_at` as the chain hashes it (microseconds, `Z`).
pub fn csv_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Where an export goes, in its format.
pub(super) enum Sink<'a> {
    Jsonl(&'a mut dyn std::io::Write),
    Csv(csv::Writer<&'a mut dyn std::io::Write>),
}

impl<'a> Sink<'a> {
    pub fn new(
        format: ExportFormat,
        out: &'a mut dyn std::io::Write,
    ) -> Result<Self, RequestError> {
        Ok(match format {
            ExportFormat::Jsonl => Self::Jsonl(out),
            ExportFormat::Csv => {
                let mut writer = csv::Writer::from_writer(out);
                writer.write_record(CSV_HEADER)?;
                Self::Csv(writer)
            }
        })
    }

    /// One request: its row, its events, the verdict of their chain and its links.
    pub fn request(
        &mut self,
        request: &ExportedRequest,
        next: Option<RequestId>,
    ) -> Result<(), RequestError> {
        let chain_error = request.verdict.as_ref().err().map(|b| {
            format!(
                "version {} (position {}): {}",
                b.version, b.position, b.problem
            )
        });
        let links = Links {
            head_version: request.head.as_ref().map(|h| h.version),
            head_hash: request.head.as_ref().map(|h| h.last_hash.clone()),
            previous_request_id: request.previous,
            next_request_id: next,
        };
        let row = &request.row;
        match self {
            Self::Jsonl(out) => {
                let line = serde_json::json!({
                    "request_id": row.id,
                    "status": row.status,
                    "received_at": row.received_at,
                    "verified": request.verdict.is_ok(),
                    "chain_error": chain_error,
                    "head_version": links.head_version,
                    "head_hash": links.head_hash,
                    "previous_request_id": links.previous_request_id,
                    "next_request_id": links.next_request_id,
                    "events": request.events.iter().map(ExportedEvent::of).collect::<Vec<_>>(),
                });
                writeln!(out, "{line}")?;
            }
            Self::Csv(writer) => {
                for e in &request.events {
                    writer.write_record(csv_record(
                        row.id,
                        request.verdict.is_ok(),
                        chain_error.as_deref(),
                        e,
                        &links,
                    ))?;
                }
                // Flush each request's rows so the output streams.
                writer.flush()?;
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<(), RequestError> {
        match self {
            Self::Jsonl(out) => out.flush()?,
            Self::Csv(writer) => writer.flush()?,
        }
        Ok(())
    }
}

/// One event's row of a CSV export, in the order of [`CSV_HEADER`].
fn csv_record(
    request_id: RequestId,
    verified: bool,
    chain_error: Option<&str>,
    e: &RecordedEvent,
    links: &Links,
) -> [String; 20] {
    let text = |value: Option<String>| value.unwrap_or_default();
    [
        request_id.to_string(),
        verified.to_string(),
        text(chain_error.map(str::to_owned)),
        e.position.to_string(),
        e.version.to_string(),
        e.event_type.clone(),
        csv_time(e.recorded_at),
        e.actor.clone(),
        text(e.command_id.clone()),
        e.correlation_id.to_string(),
        e.payload.to_string(),
        e.prev_hash.clone(),
        e.hash.clone(),
        text(e.causation_id.map(|id| id.to_string())),
        e.event_id.to_string(),
        e.schema_version.to_string(),
        text(links.head_version.map(|v| v.to_string())),
        text(links.head_hash.clone()),
        text(links.previous_request_id.map(|id| id.to_string())),
        text(links.next_request_id.map(|id| id.to_string())),
    ]
}
