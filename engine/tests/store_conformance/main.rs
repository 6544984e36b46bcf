//! The event store's contract, run against both backends (real Postgres, real SQLite):
//! optimistic concurrency, stream and global reads, metadata, idempotent commands, the hash
//! chain, and gap safety under concurrent writers that commit out of order.

#[path = "../support/mod.rs"]
mod support;

mod batches;
mod global_read;
mod streams;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use lethe_domain::event::{HoldPlaced, Received, Reminded};
use lethe_domain::{DeadlineRule, Event, Jurisdiction, RequestId, Subject};
use lethe_engine::store::keys::KeyStore;
use lethe_engine::store::{
    verify_chain, Append, Appended, Checkpoint, EventMetadata, EventStore, NewKey, RecordedEvent,
    StoreError, GENESIS_HASH,
};
use support::TestStore;
use uuid::Uuid;

fn received(id: RequestId) -> Event {
    let at = Utc.with_ymd_and_hms(2025, 1, 31, 12, 0, 0).unwrap();
    Event::Received(Received {
        request_id: id,
        subject: Subject::parse(BTreeMap::from([("user_id".to_owned(), "42".to_owned())]))
            .unwrap()
            .into(),
        jurisdiction: Jurisdiction::parse("gdpr").unwrap(),
        source: Some("test".to_owned()),
        reason: None,
        external_id: None,
        tags: vec!["a".to_owned()],
        received_at: at,
        due_at: at + chrono::TimeDelta::days(30),
        reminders: vec![at + chrono::TimeDelta::days(23)],
        deadline_rule: DeadlineRule::GDPR,
        deadline: chrono::NaiveDate::from_ymd_opt(2025, 2, 28).unwrap(),
        awaiting_approval: false,
    })
}

fn reminded(index: u32) -> Event {
    Event::Reminded(Reminded {
        index,
        at: Utc.with_ymd_and_hms(2025, 2, 23, 12, 0, 0).unwrap(),
    })
}

fn hold() -> Event {
    Event::HoldPlaced(HoldPlaced {
        at: Utc.with_ymd_and_hms(2025, 2, 1, 9, 30, 0).unwrap(),
        reason: "litigation \"quoted\" ü".to_owned(),
    })
}

fn new_id() -> RequestId {
    RequestId::from_uuid(Uuid::now_v7())
}

fn written(appended: Appended) -> Vec<RecordedEvent> {
    match appended {
        Appended::Written(events) => events,
        Appended::Duplicate(record) => panic!("unexpected duplicate {record:?}"),
    }
}

/// The stream, expected version and actual version of a conflict; anything else fails the test.
fn conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> (RequestId, i64, i64) {
    match result {
        Err(StoreError::Conflict {
            stream_id,
            expected,
            actual,
        }) => (stream_id, expected, actual),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Reads the whole global log once it holds at least `expected` events. On Postgres the global
/// read stops below the oldest transaction still open anywhere in the cluster, so right after
/// an append (with other tests writing in parallel) the newest events may not be readable yet.
async fn read_settled(store: &dyn EventStore, expected: usize) -> Vec<RecordedEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = read_everything(store).await;
        if all.len() >= expected || std::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut checkpoint = Checkpoint::START;
    loop {
        let page = store.read_all(checkpoint, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        checkpoint = last.checkpoint();
        all.extend(page);
    }
    all
}
