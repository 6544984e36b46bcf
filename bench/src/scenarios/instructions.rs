//! The `instructions` scenario: instructions per operation under valgrind's callgrind, a count
//! that does not move with the machine's load (the same binary and inputs give the same total),
//! so that small changes can be judged where wall-clock rates drift by half between runs.
//!
//! Each figure is a difference of runs of this binary under callgrind (its hidden `ops`
//! scenario): the median of three of `SMALL` and of three of `LARGE` sequential operations,
//! each after the same warm-up:
//! start-up, migrations and warm-up cancel out, and what is left is the cost of
//! `LARGE - SMALL` operations in this process. Postgres's own instructions are not counted
//! (another process); `cpu_us_per_op` in `append` and `ingest` gives its CPU time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use lethe_engine::config::Config;

use crate::db::{Backend, Db};
use crate::load::{self, LoadResult};
use crate::peer::Peer;
use crate::services::{http_client, start_api, submit_many};
use crate::{Checks, Settings};

use super::append::submit_op;
use super::ratio;

/// Operations of the two runs whose difference is measured.
const SMALL: u64 = 100;
const LARGE: u64 = 600;
/// Runs of each size, of which the median counts.
const RUNS: usize = 3;
/// Operations before either run's measured part: connections opened, caches filled.
const WARM_UP: u64 = 20;

/// What the `ops` child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Operation {
    /// `Requests::submit` in-process (as `append`).
    Append,
    /// `POST /v1/requests` to the API in this process, with its client (as `ingest`).
    Ingest,
    /// The peer event store's append of one new stream (esrs `PgStore`, Postgres only).
    Esrs,
    /// The raw one-row insert.
    Raw,
}

/// `instructions`: each operation's instructions per operation, and Lethe's over the peer's.
pub async fn instructions(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut per_op = Vec::new();
    for operation in [
        Operation::Append,
        Operation::Ingest,
        Operation::Esrs,
        Operation::Raw,
    ] {
        if operation == Operation::Esrs && backend == Backend::Sqlite {
            continue;
        }
        let small = median_of_runs(&exe, settings, backend, operation, SMALL).await?;
        let large = median_of_runs(&exe, settings, backend, operation, LARGE).await?;
        checks.expect(
            large > small,
            format!("instructions {backend} {operation:?}: {large} after {small}"),
        );
        let ir = large.saturating_sub(small) as f64 / (LARGE - SMALL) as f64;
        println!(
            "instructions {backend} op={} ops={} ir_per_op={ir:.0}",
            format!("{operation:?}").to_lowercase(),
            LARGE - SMALL
        );
        per_op.push((operation, ir));
    }
    let of = |wanted| per_op.iter().find(|(o, _)| *o == wanted).map(|(_, ir)| *ir);
    if let (Some(append), Some(esrs)) = (of(Operation::Append), of(Operation::Esrs)) {
        println!(
            "instructions {backend} append_over_esrs={:.2} ingest_over_esrs={:.2}",
            ratio(append, esrs),
            ratio(of(Operation::Ingest).unwrap_or(0.0), esrs)
        );
    }
    Ok(())
}

/// The median of [`RUNS`] counts of [`counted`]: a run's start-up (connecting, migrating)
/// sometimes takes hundreds of millions of instructions more or less than the next one's
/// (seen with the peer's store), which one run's difference would take for the operations'.
async fn median_of_runs(
    exe: &Path,
    settings: &Settings,
    backend: Backend,
    operation: Operation,
    count: u64,
) -> anyhow::Result<u64> {
    let mut totals = Vec::new();
    for _ in 0..RUNS {
        totals.push(counted(exe, settings, backend, operation, count).await?);
    }
    totals.sort_unstable();
    Ok(totals[totals.len() / 2])
}

/// The instructions callgrind counts in one run of `ops` with `count` operations.
async fn counted(
    exe: &Path,
    settings: &Settings,
    backend: Backend,
    operation: Operation,
    count: u64,
) -> anyhow::Result<u64> {
    let out = tempfile::NamedTempFile::new()?;
    let status = tokio::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.path().display()))
        .arg(exe)
        .args(["ops", "--operation"])
        .arg(format!("{operation:?}").to_lowercase())
        .args(["--ops", &count.to_string(), "--backend"])
        .arg(backend.to_string())
        .args(["--postgres-url", &settings.postgres_url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context("running valgrind (Debian's package `valgrind`)")?;
    if !status.success() {
        bail!("valgrind {operation:?} --ops {count} on {backend}: {status}");
    }
    total_instructions(&std::fs::read_to_string(out.path())?)
        .ok_or_else(|| anyhow!("no `summary:` line in callgrind's output"))
}

/// The total of callgrind's output: its `summary:` line (or, from older versions, `totals:`),
/// whose first figure is the instructions executed (the default event, `Ir`).
fn total_instructions(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        line.strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The hidden `ops` scenario, run under callgrind by [`instructions`]: `WARM_UP` operations
/// and then `count` more, one at a time.
pub async fn ops(db: &Db, operation: Operation, count: u64) -> anyhow::Result<()> {
    let forever = Duration::from_secs(24 * 3600);
    let run = |result: LoadResult| {
        if result.errors > 0 {
            bail!("{operation:?}: {:?}", result.first_error);
        }
        Ok(())
    };
    match operation {
        Operation::Append => {
            let requests = db.requests(Arc::new(Config::default()));
            run(load::run(1, forever, WARM_UP, submit_op(&requests, "warm".to_owned())).await)?;
            run(load::run(1, forever, count, submit_op(&requests, "op".to_owned())).await)
        }
        Operation::Ingest => {
            let api = start_api(db.requests(Arc::new(Config::default()))).await?;
            let client = http_client(1)?;
            run(submit_many(&client, &api.base, "warm", WARM_UP, 1, forever).await)?;
            run(submit_many(&client, &api.base, "op", count, 1, forever).await)?;
            api.stop().await;
            Ok(())
        }
        Operation::Esrs => {
            let options = db
                .pg_options()
                .ok_or_else(|| anyhow!("the peer event store needs Postgres"))?;
            let peer = Peer::connect(options, 1).await?;
            run(peer.append(1, forever, WARM_UP).await)?;
            run(peer.append(1, forever, count).await)
        }
        Operation::Raw => {
            run(db.baseline(1, forever, WARM_UP).await?)?;
            run(db.baseline(1, forever, count).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_read_from_callgrind_s_summary() {
        let output = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfn=(1) main\n\
                      12 3\nsummary: 123456789\ntotals: 999\n";
        assert_eq!(total_instructions(output), Some(123_456_789));
        assert_eq!(total_instructions("events: Ir\ntotals: 42 7\n"), Some(42));
        assert_eq!(total_instructions("events: Ir\n"), None);
    }
}
