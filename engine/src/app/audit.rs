//! Verification of the whole log: every stream's hash chain, stream by stream (the head first,
//! then the events, so appends racing the check never look like tampering), in id order and in
//! batches, so memory stays flat however long the log.

use lethe_domain::RequestId;

use chrono::{DateTime, Utc};

use super::export_file::{ExportedRequest, Sink};
use super::{RequestError, Requests};
use crate::projections::RequestFilter;
use crate::store::{verify_chain, EventStore, StoreError};

pub use super::export_file::ExportFormat;

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

impl Requests {
    /// Verifies every stream in the log ([`verify_all`]).
    pub async fn verify_log(&self) -> Result<Report, RequestError> {
        Ok(verify_all(self.store().as_ref()).await?)
    }

    /// Writes every request received in `[from, to)` with its events and verification
    /// result, request by request (one request's events in memory at a time). Returns how
    /// many requests were written and how many failed verification.
    pub async fn export(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        format: ExportFormat,
        out: &mut dyn std::io::Write,
    ) -> Result<(u64, u64), RequestError> {
        let projections = self.projections_or_refuse()?;
        let store = self.store();
        let filter = RequestFilter {
            received_from: Some(from),
            received_to: Some(to),
            ..RequestFilter::default()
        };
        let mut sink = Sink::new(format, out)?;
        let (mut written, mut failed) = (0_u64, 0_u64);
        // Each request is written once the next is known, for its link to it.
        let mut pending: Option<ExportedRequest> = None;
        let mut after = None;
        loop {
            let rows = projections.list_requests(&filter, after, BATCH).await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id);
            for row in rows {
                let (head, events) = store.read_stream_with_head(row.id).await?;
                let verdict = verify_chain(&events, head.as_ref());
                written += 1;
                failed += u64::from(verdict.is_err());
                let previous = pending.as_ref().map(|p| p.row.id);
                if let Some(done) = pending.take() {
                    sink.request(&done, Some(row.id))?;
                }
                pending = Some(ExportedRequest {
                    row,
                    head,
                    events,
                    verdict,
                    previous,
                });
            }
        }
        if let Some(done) = pending {
            sink.request(&done, None)?;
        }
        sink.finish()?;
        Ok((written, failed))
    }
}
