//! The per-stream hash chain that makes the log tamper-evident: each event's hash covers the
//! previous event's hash and the event's canonical bytes, so changing, removing or reordering
//! any stored event breaks every hash after it.
//!
//! Canonical bytes are JSON with object keys sorted and no insignificant white space, built
//! here rather than by serde_json's map order, so that a payload read back from Postgres'
//! JSONB (which reorders keys) hashes the same as when it was written.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::RecordedEvent;

/// The `prev_hash` of a stream's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the hash covers besides the previous hash: everything stored but the position,
/// which the database assigns after the hash is computed.
#[derive(Debug, Serialize)]
pub(super) struct Envelope<'a> {
    stream_id: String,
    version: i64,
    event_type: &'a str,
    schema_version: i32,
    event_id: String,
    command_id: Option<&'a str>,
    correlation_id: String,
    causation_id: Option<String>,
    actor: &'a str,
    recorded_at: String,
    payload: &'a serde_json::Value,
}

impl<'a> Envelope<'a> {
    pub(super) fn of(event: &'a RecordedEvent) -> Self {
        Self {
            stream_id: event.stream_id.to_string(),
            version: event.version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            event_id: event.event_id.to_string(),
            command_id: event.command_id.as_deref(),
            correlation_id: event.correlation_id.to_string(),
            causation_id: event.causation_id.map(|id| id.to_string()),
            actor: &event.actor,
            recorded_at: event
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            payload: &event.payload,
        }
    }
}

/// `hex(sha256(prev_hash || "\n" || canonical_json(envelope)))`.
pub(super) fn chain_hash(prev_hash: &str, envelope: &Envelope<'_>) -> String {
    let value = serde_json::to_value(envelope).unwrap_or(serde_json::Value::Null);
    let mut canonical = String::with_capacity(512);
    write_canonical(&value, &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Where a stream's chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub version: i64,
    pub position: i64,
    pub problem: String,
}

/// Checks one stream's events (in version order) against each other and, when given, against
/// the stream's recorded head. Returns the first break.
pub fn verify_chain(
    events: &[RecordedEvent],
    head: Option<&super::StreamHead>,
) -> Result<(), ChainBreak> {
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut last = (0_i64, 0_i64);
    for (expected_version, event) in (1_i64..).zip(events) {
        let broken = |problem: String| ChainBreak {
            version: event.version,
            position: event.position,
            problem,
        };
        if event.version != expected_version {
            return Err(broken(format!(
                "version {} where {expected_version} was expected (an event is missing)",
                event.version
            )));
        }
        if event.prev_hash != prev_hash {
            return Err(broken(
                "prev_hash does not match the previous event's hash".to_owned(),
            ));
        }
        if event.expected_hash() != event.hash {
            return Err(broken(
                "hash does not match the event's content (the event was altered)".to_owned(),
            ));
        }
        prev_hash.clone_from(&event.hash);
        last = (event.version, event.position);
    }
    // The head is read before the events by callers, so a chain may have grown past it by
    // appends in between; it must never end short of it or disagree with it.
    if let Some(head) = head {
        let at_head = usize::try_from(head.version)
            .ok()
            .and_then(|v| v.checked_sub(1))
            .and_then(|i| events.get(i));
        let consistent = match at_head {
            Some(event) => event.hash == head.last_hash,
            None => head.version == 0 && last.0 == 0,
        };
        if !consistent {
            return Err(ChainBreak {
                version: last.0,
                position: last.1,
                problem: format!(
                    "the stream's head records version {} but the chain ends at version {} \
                     or differs there (events were removed or the head was altered)",
                    head.version, last.0
                ),
            });
        }
    }
    Ok(())
}
