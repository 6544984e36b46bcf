//! The `suppressions` table (ADR 33), kept by the `requests` projection's subscription in the
//! transaction that moves its checkpoint: a `Suppressed` event adds one row per keyed hash, a
//! `SuppressionLifted` deletes the request's rows. Expiry is not a change: a row whose
//! `expires_at` has passed is simply not answered.

use chrono::{DateTime, Utc};
use lethe_domain::{Event, RequestId};

use crate::store::{RecordedEvent, StoreError};

/// One entry: an identifier's keyed hash, kept for a completed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionEntry {
    pub hash: String,
    pub request_id: RequestId,
    pub suppressed_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a batch of events does to the table, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SuppressionChange {
    Add(Vec<SuppressionEntry>),
    Lift(RequestId),
}

pub(crate) fn changes(events: &[RecordedEvent]) -> Result<Vec<SuppressionChange>, StoreError> {
    let mut changes = Vec::new();
    for recorded in events {
        // Only these two types are decoded: the rest of the batch is the requests rows' work.
        match recorded.event_type.as_str() {
            "Suppressed" | "SuppressionLifted" => {}
            _ => continue,
        }
        match recorded.event()? {
            Event::Suppressed(suppressed) => changes.push(SuppressionChange::Add(
                suppressed
                    .hashes
                    .into_iter()
                    .map(|hash| SuppressionEntry {
                        hash,
                        request_id: recorded.stream_id,
                        suppressed_at: suppressed.at,
                        expires_at: suppressed.expires_at,
                    })
                    .collect(),
            )),
            Event::SuppressionLifted(_) => {
                changes.push(SuppressionChange::Lift(recorded.stream_id));
            }
            _ => {}
        }
    }
    Ok(changes)
}
