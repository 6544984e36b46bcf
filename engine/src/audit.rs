//! Verification of the whole log: every stream's hash chain, checked in one streaming pass over
//! the global log (memory grows with the number of streams, not events), then each stream's
//! recorded head, so that removed events are caught too.

use std::collections::HashMap;

use lethe_domain::RequestId;

use crate::store::{Checkpoint, EventStore, StoreError, GENESIS_HASH};

const BATCH: u32 = 1000;

/// One broken chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stream_id: RequestId,
    pub version: i64,
    pub position: i64,
    pub problem: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub streams: u64,
    pub events: u64,
    /// At most one failure per stream: the first break in its chain.
    pub failures: Vec<Failure>,
}

#[derive(Debug)]
struct Tail {
    version: i64,
    position: i64,
    hash: String,
    broken: bool,
}

/// Verifies every stream in the log.
pub async fn verify_all(store: &dyn EventStore) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let mut tails: HashMap<RequestId, Tail> = HashMap::new();
    let mut checkpoint = Checkpoint::START;
    loop {
        let batch = store.read_all(checkpoint, BATCH).await?;
        let Some(last) = batch.last() else { break };
        checkpoint = last.checkpoint();
        for event in batch {
            report.events += 1;
            let tail = tails.entry(event.stream_id).or_insert_with(|| Tail {
                version: 0,
                position: 0,
                hash: GENESIS_HASH.to_owned(),
                broken: false,
            });
            if tail.broken {
                continue;
            }
            let problem = if event.version != tail.version + 1 {
                Some(format!(
                    "version {} where {} was expected (an event is missing)",
                    event.version,
                    tail.version + 1
                ))
            } else if event.prev_hash != tail.hash {
                Some("prev_hash does not match the previous event's hash".to_owned())
            } else if event.expected_hash() != event.hash {
                Some("hash does not match the event's content (the event was altered)".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                tail.broken = true;
                report.failures.push(Failure {
                    stream_id: event.stream_id,
                    version: event.version,
                    position: event.position,
                    problem,
                });
            } else {
                tail.version = event.version;
                tail.position = event.position;
                tail.hash = event.hash;
            }
        }
    }
    let mut after = None;
    loop {
        let heads = store.list_streams(after, BATCH).await?;
        let Some((last, _)) = heads.last() else { break };
        after = Some(*last);
        for (stream_id, head) in heads {
            report.streams += 1;
            let tail = tails.get(&stream_id);
            if tail.is_some_and(|t| t.broken) {
                continue;
            }
            let (version, position, hash) = tail.map_or((0, 0, GENESIS_HASH), |t| {
                (t.version, t.position, t.hash.as_str())
            });
            if head.version != version || head.last_hash != hash {
                report.failures.push(Failure {
                    stream_id,
                    version,
                    position,
                    problem: format!(
                        "the stream's head records version {} but the chain ends at version \
                         {version} (events were removed or the head was altered)",
                        head.version
                    ),
                });
            }
        }
    }
    Ok(report)
}
