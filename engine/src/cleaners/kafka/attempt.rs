//! What a Kafka cleaner with a topic of its own is sent (ADR 5, docs/KAFKA.md): one message per
//! attempt, carrying the subject's identifiers as far as the cleaner may see them, or one
//! message per batch carrying each request's attempt.

use std::collections::BTreeMap;

use lethe_domain::CleanerName;
use uuid::Uuid;

use super::message::{
    Message, ATTEMPT, CLEANER, CORRELATION_ID, EVENT_ID, EVENT_TYPE, SCHEMA_VERSION,
};
use crate::cleaners::Attempt;

/// `lethe-event-type` (and `type`) of one attempt's message.
pub const ATTEMPT_TYPE: &str = "CleanerAttempt";
/// `lethe-event-type` (and `type`) of a batch's message.
pub const BATCH_TYPE: &str = "CleanerAttemptBatch";
/// Only on a batch: how many requests it carries.
pub const BATCH_SIZE: &str = "lethe-batch-size";
/// The schema of both values.
const SCHEMA: u32 = 1;

/// How the cleaner answers: the topic the results go to.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub results_topic: &'a str,
}

/// The id of `cleaner`'s `attempt` for request `request`: a name-based UUID (version 5) under
/// the request id, the same every time this attempt is published (alone or in a batch), and
/// another for any other attempt, cleaner or request. Request and event ids are version 7, so
/// it never equals one of them.
pub fn attempt_id(request: &Uuid, cleaner: &CleanerName, attempt: u32) -> Uuid {
    Uuid::new_v5(
        request,
        format!("kafka-attempt/{cleaner}/{attempt}").as_bytes(),
    )
}

/// The part of the value about one request: what the cleaner needs to act on and answer it.
fn item(attempt: &Attempt<'_>, subject: &BTreeMap<String, String>) -> serde_json::Value {
    let request = attempt.request;
    serde_json::json!({
        "attempt_id": attempt_id(request.id.as_uuid(), attempt.cleaner, attempt.attempt),
        "request_id": request.id,
        "cleaner": attempt.cleaner,
        "attempt": attempt.attempt,
        "subject": subject,
        "due_at": request.due_at,
        "deadline": request.deadline,
        "idempotency_key": attempt.idempotency_key(),
        "callback_url": attempt.callback_url(),
    })
}

/// One attempt's message: key `key`, id = its [`attempt_id`].
pub fn single(
    attempt: &Attempt<'_>,
    subject: &BTreeMap<String, String>,
    key: String,
    answer: Answer<'_>,
) -> Message {
    let mut value = item(attempt, subject);
    let id = attempt_id(
        attempt.request.id.as_uuid(),
        attempt.cleaner,
        attempt.attempt,
    );
    value["event_id"] = serde_json::json!(id);
    value["type"] = serde_json::json!(ATTEMPT_TYPE);
    value["results_topic"] = serde_json::json!(answer.results_topic);
    let correlation = attempt.due.map_or(id, |due| due.correlation_id);
    Message {
        id,
        key,
        value,
        headers: vec![
            (EVENT_ID, id.to_string()),
            (EVENT_TYPE, ATTEMPT_TYPE.to_owned()),
            (SCHEMA_VERSION, SCHEMA.to_string()),
            (CORRELATION_ID, correlation.to_string()),
            (CLEANER, attempt.cleaner.to_string()),
            (ATTEMPT, attempt.attempt.to_string()),
        ],
    }
}

/// One message for the attempts of a batch (each with its subject), keyed and identified by
/// its id: a name-based UUID of the attempts' ids, so the same batch published again has the
/// same id. A consumer deduplicates the requests on their `attempt_id`s, since a batch
/// published again after a failure may be made of other requests.
pub fn batch(
    cleaner: &CleanerName,
    attempts: &[(&Attempt<'_>, &BTreeMap<String, String>)],
    answer: Answer<'_>,
) -> Message {
    let items: Vec<serde_json::Value> = attempts
        .iter()
        .map(|(attempt, subject)| item(attempt, subject))
        .collect();
    let ids: Vec<String> = items
        .iter()
        .map(|item| item["attempt_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("kafka-batch/{}", ids.join(",")).as_bytes(),
    );
    let value = serde_json::json!({
        "event_id": id,
        "type": BATCH_TYPE,
        "cleaner": cleaner,
        "results_topic": answer.results_topic,
        "requests": items,
    });
    Message {
        id,
        key: id.to_string(),
        value,
        headers: vec![
            (EVENT_ID, id.to_string()),
            (EVENT_TYPE, BATCH_TYPE.to_owned()),
            (SCHEMA_VERSION, SCHEMA.to_string()),
            (CORRELATION_ID, id.to_string()),
            (CLEANER, cleaner.to_string()),
            (BATCH_SIZE, attempts.len().to_string()),
        ],
    }
}
