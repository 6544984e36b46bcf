//! Verification of the whole log: every stream's hash chain, stream by stream (the head first,
//! then the events, so appends racing the check never look like tampering), in id order and in
//! batches, so memory stays flat however long the log.

use lethe_domain::RequestId;

use crate::store::{verify_chain, EventStore, StoreError};

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

/// Verifies every stream in the log.
pub async fn verify_all(store: &dyn EventStore) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let mut after = None;
    loop {
        let heads = store.list_streams(after, BATCH).await?;
        let Some((last, _)) = heads.last() else { break };
        after = Some(*last);
        for (stream_id, head) in heads {
            report.streams += 1;
            let events = store.read_stream(stream_id, 0).await?;
            report.events += events.len() as u64;
            if let Err(broken) = verify_chain(&events, Some(&head)) {
                report.failures.push(Failure {
                    stream_id,
                    version: broken.version,
                    position: broken.position,
                    problem: broken.problem,
                });
            }
        }
    }
    Ok(report)
}
