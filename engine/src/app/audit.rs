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

/// The format of `lethe audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per request: its events and the verdict of its hash chain.
    Jsonl,
    /// One row per event, with the request's verdict on every row.
    Csv,
}

/// Writes every request received in `[from, to)` with its events and verification result,
/// request by request (one request's events in memory at a time). Returns how many requests
/// were written and how many failed verification.
pub async fn export(
    log: &dyn EventStore,
    projections: &dyn crate::projections::ProjectionStore,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    format: ExportFormat,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<(u64, u64)> {
    let filter = crate::projections::RequestFilter {
        received_from: Some(from),
        received_to: Some(to),
        ..crate::projections::RequestFilter::default()
    };
    enum Sink<'a> {
        Jsonl(&'a mut dyn std::io::Write),
        Csv(csv::Writer<&'a mut dyn std::io::Write>),
    }
    let mut sink = match format {
        ExportFormat::Jsonl => Sink::Jsonl(out),
        ExportFormat::Csv => Sink::Csv(csv::Writer::from_writer(out)),
    };
    if let Sink::Csv(writer) = &mut sink {
        writer.write_record([
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
        ])?;
    }
    let (mut written, mut failed) = (0_u64, 0_u64);
    let mut after = None;
    loop {
        let rows = projections.list_requests(&filter, after, BATCH).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        for row in rows {
            let head = log.stream_head(row.id).await?;
            let events = log.read_stream(row.id, 0).await?;
            let verdict = verify_chain(&events, head.as_ref());
            written += 1;
            failed += u64::from(verdict.is_err());
            let chain_error = verdict.as_ref().err().map(|b| {
                format!(
                    "version {} (position {}): {}",
                    b.version, b.position, b.problem
                )
            });
            match &mut sink {
                Sink::Jsonl(out) => {
                    let line = serde_json::json!({
                        "request_id": row.id,
                        "status": row.status,
                        "received_at": row.received_at,
                        "verified": verdict.is_ok(),
                        "chain_error": chain_error,
                        "events": events.iter().map(|e| serde_json::json!({
                            "position": e.position,
                            "version": e.version,
                            "type": e.event_type,
                            "recorded_at": e.recorded_at,
                            "actor": e.actor,
                            "command_id": e.command_id,
                            "correlation_id": e.correlation_id,
                            "data": e.payload,
                            "prev_hash": e.prev_hash,
                            "hash": e.hash,
                        })).collect::<Vec<_>>(),
                    });
                    writeln!(out, "{line}")?;
                }
                Sink::Csv(writer) => {
                    for e in &events {
                        writer.write_record([
                            row.id.to_string(),
                            verdict.is_ok().to_string(),
                            chain_error.clone().unwrap_or_default(),
                            e.position.to_string(),
                            e.version.to_string(),
                            e.event_type.clone(),
                            e.recorded_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                            e.actor.clone(),
                            e.command_id.clone().unwrap_or_default(),
                            e.correlation_id.to_string(),
                            e.payload.to_string(),
                            e.prev_hash.clone(),
                            e.hash.clone(),
                        ])?;
                    }
                    // Flush each request's rows so the output streams.
                    writer.flush()?;
                }
            }
        }
    }
    match &mut sink {
        Sink::Jsonl(out) => out.flush()?,
        Sink::Csv(writer) => writer.flush()?,
    }
    Ok((written, failed))
}
