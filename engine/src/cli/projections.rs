//! `lethe projections rebuild`: a projection (or all) rebuilt from the log.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::Context;
use crate::root::PROJECTIONS;

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild a projection (or all) from the log.
    Rebuild {
        /// requests; all when absent
        name: Option<String>,
    },
}

pub(super) async fn run(
    context: &Context,
    command: ProjectionsCommand,
) -> anyhow::Result<ExitCode> {
    let ProjectionsCommand::Rebuild { name } = command;
    let database = context.database().await?;
    let names: Vec<String> = match name {
        Some(name) => vec![name],
        None => PROJECTIONS.iter().map(|n| (*n).to_owned()).collect(),
    };
    for name in names {
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut report = |handled: u64, head: i64| {
            if last_report.elapsed() >= Duration::from_secs(1) {
                // Progress into a closed pipe does not stop the rebuild; its end is reported
                // (and a closed pipe noticed) after it.
                let _unread =
                    outln!("rebuilding {name}: {handled} events (log head at position {head})");
                last_report = Instant::now();
            }
        };
        let handled = database.rebuild_projection(&name, &mut report).await?;
        let seconds = started.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let rate = handled as f64 / seconds.max(0.001);
        outln!("rebuilt {name}: {handled} events in {seconds:.1} s ({rate:.0} events/s)")?;
    }
    Ok(ExitCode::SUCCESS)
}
