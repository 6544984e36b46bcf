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

/// `hex(sha256(prev_hash || "\n" || canonical_json(envelope)))`, where the envelope is
/// everything stored but the position, which the database assigns after the hash is
/// computed: `{actor, causation_id, command_id, correlation_id, event_id, event_type, payload,
/// recorded_at, schema_version, stream_id, version}`.
pub(super) fn chain_hash(prev_hash: &str, event: &RecordedEvent) -> String {
    let mut canonical = Vec::with_capacity(1024);
    write_envelope(event, &mut canonical);
    let digest = Sha256::new()
        .chain_update(prev_hash.as_bytes())
        .chain_update(b"\n")
        .chain_update(&canonical)
        .finalize();
    let mut hex = [0_u8; 64];
    // 32 bytes are exactly 64 hex digits.
    hex::encode_to_slice(digest, &mut hex).unwrap();
    String::from_utf8(hex.to_vec()).unwrap()
}

/// The envelope's canonical JSON, written field by field in key order (the order of the
/// struct `to_value` of which the first version hashed, sorted; see the tests).
fn write_envelope(event: &RecordedEvent, out: &mut Vec<u8>) {
    let mut uuid = uuid::Uuid::encode_buffer();
    out.extend_from_slice(b"{\"actor\":");
    json(&event.actor, out);
    out.extend_from_slice(b",\"causation_id\":");
    match event.causation_id {
        Some(id) => json(id.hyphenated().encode_lower(&mut uuid), out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"command_id\":");
    json(&event.command_id, out);
    out.extend_from_slice(b",\"correlation_id\":");
    json(
        event.correlation_id.hyphenated().encode_lower(&mut uuid),
        out,
    );
    out.extend_from_slice(b",\"event_id\":");
    json(event.event_id.hyphenated().encode_lower(&mut uuid), out);
    out.extend_from_slice(b",\"event_type\":");
    json(&event.event_type, out);
    out.extend_from_slice(b",\"payload\":");
    write_canonical(&event.payload, out);
    out.extend_from_slice(b",\"recorded_at\":");
    json(
        &event
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        out,
    );
    out.extend_from_slice(b",\"schema_version\":");
    json(&event.schema_version, out);
    out.extend_from_slice(b",\"stream_id\":");
    json(
        event
            .stream_id
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut uuid),
        out,
    );
    out.extend_from_slice(b",\"version\":");
    json(&event.version, out);
    out.push(b'}');
}

/// Compact JSON of a string, a number or a scalar `Value`, as serde_json writes it.
fn json(value: &(impl Serialize + ?Sized), out: &mut Vec<u8>) {
    // Strings, numbers and `Value`s always serialize, and writing into memory cannot fail.
    serde_json::to_writer(out, value).unwrap();
}

/// JSON with object keys sorted and no insignificant white space. (serde_json's map keeps
/// its keys sorted already, unless a crate turns on its `preserve_order`: then they are
/// sorted here.)
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(map) => {
            if map.keys().is_sorted() {
                write_entries(map.iter(), out);
            } else {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                write_entries(entries.into_iter(), out);
            }
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => json(scalar, out),
    }
}

fn write_entries<'a>(
    entries: impl Iterator<Item = (&'a String, &'a serde_json::Value)>,
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json(key, out);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use lethe_domain::RequestId;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    /// The first version of the hash, kept as the definition that stored hashes were
    /// computed with: the envelope struct turned into a `Value`, then written with its keys
    /// sorted, one allocation per key and scalar.
    fn reference_hash(prev_hash: &str, event: &RecordedEvent) -> String {
        #[derive(Serialize)]
        struct Envelope<'a> {
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
        fn canonical(value: &serde_json::Value, out: &mut String) {
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
                        canonical(value, out);
                    }
                    out.push('}');
                }
                serde_json::Value::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        canonical(item, out);
                    }
                    out.push(']');
                }
                scalar => out.push_str(&scalar.to_string()),
            }
        }
        let envelope = Envelope {
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
        };
        let value = serde_json::to_value(&envelope).unwrap();
        let mut text = String::new();
        canonical(&value, &mut text);
        let mut hasher = Sha256::new();
        hasher.update(prev_hash.as_bytes());
        hasher.update(b"\n");
        hasher.update(text.as_bytes());
        hex::encode(hasher.finalize())
    }

    fn event(
        payload: serde_json::Value,
        command_id: Option<&str>,
        causation: bool,
    ) -> RecordedEvent {
        RecordedEvent {
            position: 7,
            transaction_id: 3,
            stream_id: RequestId::from_uuid(Uuid::from_u128(
                0x0193_0000_0000_7000_8000_0000_0000_0001,
            )),
            version: 2,
            event_type: "Received".to_owned(),
            schema_version: 1,
            payload,
            event_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0002),
            command_id: command_id.map(str::to_owned),
            correlation_id: Uuid::from_u128(3),
            causation_id: causation.then(|| Uuid::from_u128(4)),
            actor: "api:\"ops\" \u{e9}\n".to_owned(),
            recorded_at: Utc.timestamp_micros(1_764_547_200_123_456).unwrap(),
            prev_hash: GENESIS_HASH.to_owned(),
            hash: String::new(),
        }
    }

    fn payloads() -> Vec<serde_json::Value> {
        vec![
            json!({}),
            json!(null),
            json!({"z": 1, "a": [1, 2.5, -3, 1e300, true, null], "m": {"y": "\u{0}\t\"\\/", "b": {}}}),
            json!({"subject": {"sealed": "AAEC", "key": 1}, "tags": ["x", "y"], "deadline": "2026-12-31T00:00:00Z", "emoji": "\u{1F600}", "big": 18_446_744_073_709_551_615_u64}),
            json!([{"b": 1, "a": 2}, [], "s"]),
        ]
    }

    #[test]
    fn the_hash_is_the_first_versions_for_every_shape_of_event() {
        for payload in payloads() {
            for (command_id, causation) in [(None, false), (Some("submit:a:\"k\""), true)] {
                let event = event(payload.clone(), command_id, causation);
                for prev in [GENESIS_HASH, "ab".repeat(32).as_str()] {
                    assert_eq!(
                        chain_hash(prev, &event),
                        reference_hash(prev, &event),
                        "payload {payload}, command {command_id:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn objects_are_written_with_sorted_keys_and_no_white_space() {
        let mut sorted = Vec::new();
        write_canonical(&json!({"a": 1, "b": {"c": 2, "d": 3}}), &mut sorted);
        let mut map = serde_json::Map::new();
        map.insert("b".to_owned(), json!({"d": 3, "c": 2}));
        map.insert("a".to_owned(), json!(1));
        let mut written = Vec::new();
        write_canonical(&serde_json::Value::Object(map), &mut written);
        assert_eq!(written, sorted);
        assert_eq!(sorted, br#"{"a":1,"b":{"c":2,"d":3}}"#);
    }
}
