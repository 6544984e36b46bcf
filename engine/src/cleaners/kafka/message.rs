//! What Lethe publishes: one [`Message`] per event the relay publishes, and one per retry of a
//! Kafka cleaner. Every message carries the same headers (docs/KAFKA.md), and its own id in
//! `lethe-event-id`, the id consumers deduplicate deliveries on.

use lethe_domain::CleanerName;
use rdkafka::message::{Header, OwnedHeaders};
use uuid::Uuid;

use crate::store::RecordedEvent;

/// The header that identifies a message: the same on every delivery of one message, different
/// for every message Lethe means to send.
pub const EVENT_ID: &str = "lethe-event-id";
pub const EVENT_TYPE: &str = "lethe-event-type";
pub const SCHEMA_VERSION: &str = "lethe-schema-version";
pub const CORRELATION_ID: &str = "lethe-correlation-id";
/// Only on a retry: the cleaner it is for.
pub const CLEANER: &str = "lethe-cleaner";
/// Only on a retry: the attempt to answer for.
pub const ATTEMPT: &str = "lethe-attempt";

/// One message: key = the request id, a JSON value, and its headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub key: String,
    pub value: serde_json::Value,
    pub headers: Vec<(&'static str, String)>,
}

impl Message {
    /// `event` as the relay publishes it: the message id is the event's id.
    pub fn event(event: &RecordedEvent) -> Self {
        Self::new(event, event.event_id, message_value(event))
    }

    /// The Due message again, for `cleaner`'s `attempt` (2 or later): `"cleaner"`, `"attempt"`
    /// and `"due_event_id"` in the value, `lethe-cleaner` and `lethe-attempt` headers, and an
    /// id of its own ([`retry_id`]), so that a consumer deduplicating on `lethe-event-id`
    /// acts on every retry.
    pub fn retry(due: &RecordedEvent, cleaner: &CleanerName, attempt: u32) -> Self {
        let id = retry_id(due.event_id, cleaner, attempt);
        let mut value = message_value(due);
        value["event_id"] = serde_json::json!(id);
        value["due_event_id"] = serde_json::json!(due.event_id);
        value["cleaner"] = serde_json::json!(cleaner);
        value["attempt"] = serde_json::json!(attempt);
        let mut message = Self::new(due, id, value);
        message.headers.push((CLEANER, cleaner.as_str().to_owned()));
        message.headers.push((ATTEMPT, attempt.to_string()));
        message
    }

    fn new(event: &RecordedEvent, id: Uuid, value: serde_json::Value) -> Self {
        Self {
            id,
            key: event.stream_id.to_string(),
            value,
            headers: vec![
                (EVENT_ID, id.to_string()),
                (EVENT_TYPE, event.event_type.clone()),
                (SCHEMA_VERSION, event.schema_version.to_string()),
                (CORRELATION_ID, event.correlation_id.to_string()),
            ],
        }
    }

    pub fn kafka_headers(&self) -> OwnedHeaders {
        self.headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                })
            })
    }
}

/// The id of the message that asks `cleaner` for `attempt` of the request whose Due event is
/// `due_event_id`: a name-based UUID (version 5) under the Due event's id. Publishing the same
/// attempt again (a crash between the publish and the record of it) gives the same id, which a
/// consumer drops as a repeat; any other attempt, cleaner or request gives another. Event ids
/// are version 7, so it never equals an event's id.
pub fn retry_id(due_event_id: Uuid, cleaner: &CleanerName, attempt: u32) -> Uuid {
    Uuid::new_v5(
        &due_event_id,
        format!("kafka-retry/{cleaner}/{attempt}").as_bytes(),
    )
}

/// The JSON value of a published event (docs/KAFKA.md, "Messages").
pub fn message_value(event: &RecordedEvent) -> serde_json::Value {
    serde_json::json!({
        "event_id": event.event_id,
        "request_id": event.stream_id,
        "type": event.event_type,
        "position": event.position,
        "recorded_at": event.recorded_at,
        "data": event.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_event() -> RecordedEvent {
        RecordedEvent {
            position: 42,
            transaction_id: 0,
            stream_id: lethe_domain::RequestId::from_uuid(Uuid::now_v7()),
            version: 2,
            event_type: "Due".to_owned(),
            schema_version: 1,
            payload: serde_json::json!({"cleaners": [{"name": "search", "max_attempts": 8}]}),
            event_id: Uuid::now_v7(),
            command_id: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor: "system:timers".to_owned(),
            recorded_at: chrono::Utc::now(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn header<'a>(message: &'a Message, key: &str) -> Option<&'a str> {
        message
            .headers
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_retry_carries_every_header_of_the_relay_and_an_id_of_its_own() {
        let due = due_event();
        let search = CleanerName::parse("search").unwrap();
        let relayed = Message::event(&due);
        let retry = Message::retry(&due, &search, 2);
        for key in [EVENT_ID, EVENT_TYPE, SCHEMA_VERSION, CORRELATION_ID] {
            assert!(header(&retry, key).is_some(), "{key} missing");
        }
        assert_eq!(header(&retry, EVENT_TYPE), Some("Due"));
        assert_eq!(header(&retry, SCHEMA_VERSION), Some("1"));
        assert_eq!(
            header(&retry, CORRELATION_ID),
            header(&relayed, CORRELATION_ID)
        );
        assert_eq!(header(&retry, CLEANER), Some("search"));
        assert_eq!(header(&retry, ATTEMPT), Some("2"));
        assert_ne!(header(&retry, EVENT_ID), header(&relayed, EVENT_ID));
        assert_eq!(
            header(&retry, EVENT_ID),
            Some(retry.id.to_string().as_str())
        );
        assert_eq!(retry.value["event_id"], serde_json::json!(retry.id));
        assert_eq!(retry.value["due_event_id"], serde_json::json!(due.event_id));
        assert_eq!(retry.value["attempt"], 2);
        assert_eq!(retry.value["cleaner"], "search");
        assert_eq!(retry.value["data"], due.payload);
        assert_eq!(retry.key, relayed.key);
        assert_eq!(
            header(&relayed, EVENT_ID),
            Some(due.event_id.to_string().as_str())
        );
        assert_eq!(relayed.value["event_id"], serde_json::json!(due.event_id));
    }

    #[test]
    fn the_same_attempt_gets_the_same_id_and_anything_else_another() {
        let due = due_event();
        let other_due = due_event();
        let search = CleanerName::parse("search").unwrap();
        let crm = CleanerName::parse("crm").unwrap();
        let id = retry_id(due.event_id, &search, 2);
        assert_eq!(Message::retry(&due, &search, 2).id, id);
        assert_eq!(
            Message::retry(&due, &search, 2),
            Message::retry(&due, &search, 2)
        );
        let others = [
            retry_id(due.event_id, &search, 3),
            retry_id(due.event_id, &crm, 2),
            retry_id(other_due.event_id, &search, 2),
            due.event_id,
        ];
        for other in others {
            assert_ne!(id, other);
        }
        assert_eq!(id.get_version_num(), 5);
    }
}
