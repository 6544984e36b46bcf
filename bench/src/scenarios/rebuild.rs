//! The `rebuild` scenario.

use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::db::Db;
use crate::load::per_second;
use crate::{Checks, Settings};

use super::lifecycle::baseline_duration;
use super::replay::fill_log;
use super::{ratio, yes_no, FILL_CONCURRENCY};

/// `rebuild`: fills a log of N events, then rebuilds every projection from it
/// (`lethe projections rebuild`'s code path) and times the replay.
pub async fn rebuild(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    // Concurrent appends (group-committed), so that on Postgres the read order (transaction
    // id, position) differs from position order, as in a log written by a busy engine.
    let (_, events) = fill_log(db, settings, checks, "rebuild", FILL_CONCURRENCY).await?;
    let database = db.database();
    let started = Instant::now();
    let mut handled = 0_u64;
    let mut progress = |_: u64, _: i64| {};
    for name in lethe_engine::projections::ALL {
        let run = lethe_engine::projections::rebuild(
            &database.events,
            &database.projections,
            name,
            &mut progress,
        );
        match tokio::time::timeout(settings.time_limit, run).await {
            Ok(result) => handled += result.with_context(|| format!("rebuilding {name}"))?,
            Err(_) => bail!(
                "rebuild {backend}: {name} was not rebuilt within {} s",
                settings.time_limit.as_secs()
            ),
        }
    }
    let elapsed = started.elapsed();
    let rate = per_second(handled, elapsed);
    let baseline = db
        .baseline(1, baseline_duration(settings, elapsed), u64::MAX)
        .await?;
    println!(
        "rebuild {backend} projections={} events={events} handled={handled} seconds={:.2} \
         events_per_s={rate:.1} baseline_c=1 baseline_rows_per_s={:.1} ratio={:.2}",
        lethe_engine::projections::ALL.join(","),
        elapsed.as_secs_f64(),
        baseline.rate(),
        ratio(rate, baseline.rate()),
    );
    println!(
        "rebuild {backend} target=\"events_per_s>=100000 (1,000,000-event log)\" events={events} \
         events_per_s={rate:.1} met={}",
        yes_no(rate >= 100_000.0 && events >= 1_000_000)
    );
    let expected = u64::try_from(events)? * lethe_engine::projections::ALL.len() as u64;
    checks.expect(
        handled == expected,
        format!("rebuild {backend}: handled {handled} events, expected {expected}"),
    );
    Ok(())
}
