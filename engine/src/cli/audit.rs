//! `lethe verify`, `lethe audit export` and `lethe audit verify-export`: the hash chains,
//! checked in the database, exported, and checked again in an export with no database.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clap::{Args, Subcommand};

use super::{exit_code, parse_id, Context};
use crate::app::audit::ExportFormat;
use crate::app::verify_export::verify_export as verify_export_file;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Every request received in [FROM, TO), streamed to stdout.
    Export {
        /// First day (YYYY-MM-DD) or time (RFC 3339), inclusive.
        #[arg(long)]
        from: String,
        /// Last day (inclusive) or time (exclusive).
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// Recompute every hash chain of an export (JSONL or CSV) from the file alone, with no
    /// database; exit 1 naming the line, request and position of each break.
    VerifyExport {
        /// The export (`-` for stdin).
        file: PathBuf,
    },
}

pub(super) async fn verify(context: &Context, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let database = context.database().await?;
    // Verification reads no personal data: no keys needed.
    let requests = context.app(&database, None);
    let Some(id) = args.id else {
        let report = requests.verify_log().await?;
        for f in &report.failures {
            outln!(
                "FAILED: request {} at version {} (position {}): {}",
                f.stream_id,
                f.version,
                f.position,
                f.problem
            )?;
        }
        if report.failures.is_empty() {
            outln!(
                "ok: {} requests, {} events, every hash chain verified",
                report.streams,
                report.events
            )?;
        } else {
            outln!(
                "{} of {} requests failed verification",
                report.failures.len(),
                report.streams
            )?;
        }
        return Ok(exit_code(report.failures.is_empty()));
    };
    let id = parse_id(&id)?;
    let view = requests.history(id, false).await?;
    match &view.chain_error {
        None => outln!("ok: request {id}: {} events verified", view.events.len())?,
        Some(e) => outln!(
            "FAILED: request {id} at version {} (position {}): {}",
            e.version,
            e.position,
            e.problem
        )?,
    }
    Ok(exit_code(view.chain_error.is_none()))
}

pub(super) async fn run(context: &Context, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let (from, to, format) = match command {
        AuditCommand::Export { from, to, format } => (from, to, format),
        AuditCommand::VerifyExport { file } => return verify_export(&file),
    };
    let from = export_bound(&from, false)?;
    let to = export_bound(&to, true)?;
    if to <= from {
        bail!("--to must be after --from");
    }
    let database = context.database().await?;
    database.catch_up_projections().await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (written, failed) = context
        .app(&database, None)
        .export(from, to, format, &mut out)
        .await?;
    drop(out);
    eprintln!("exported {written} requests; {failed} failed verification");
    Ok(exit_code(failed == 0))
}

/// `lethe audit verify-export FILE`: opens no database and reads no configuration of one.
fn verify_export(file: &Path) -> anyhow::Result<ExitCode> {
    let check = if file == Path::new("-") {
        verify_export_file(std::io::stdin().lock())?
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|e| anyhow!("cannot open {}: {e}", file.display()))?;
        verify_export_file(std::io::BufReader::new(opened))?
    };
    for finding in &check.findings {
        outln!("FAILED: {finding}")?;
    }
    let what = format!(
        "{} requests, {} events ({})",
        check.requests,
        check.events,
        match check.format {
            ExportFormat::Jsonl => "JSONL",
            ExportFormat::Csv => "CSV",
        }
    );
    if check.findings.is_empty() {
        outln!("ok: {what}, every hash chain verified from the file alone")?;
    } else {
        let n = check.findings.len();
        let findings = if n == 1 { "finding" } else { "findings" };
        outln!("{n} {findings} in {what}")?;
    }
    Ok(exit_code(check.findings.is_empty()))
}

/// A `--from`/`--to` bound: an RFC 3339 time, or a date (a `--to` date includes that day).
fn export_bound(raw: &str, end: bool) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| anyhow!("{raw:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))?;
    let day = if end {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    };
    Ok(day.and_time(NaiveTime::MIN).and_utc())
}
