//! `lethe cleaners test` for a Redis cleaner: which keys and fields an attempt would delete,
//! found with `EXISTS`, `HEXISTS` and `SCAN` alone, so that nothing changes.

use ::redis::aio::ConnectionLike;
use ::redis::RedisResult;

use super::erase::Tally;
use super::plan::{Action, Target};
use super::scan::{run_scans, Scan, ScanMode};
use super::SCAN_COUNT;
use crate::cleaners::{DryRun, DryRunItem};

/// The most keys listed for one pattern (all are counted).
const MAX_LISTED: usize = 200;

/// One item per target, in the order of the settings.
pub(super) async fn look(
    connection: &mut (impl ConnectionLike + Send),
    plan: &[Target],
) -> RedisResult<DryRun> {
    let mut pipe = ::redis::pipe();
    let mut checked: Vec<usize> = Vec::new();
    let mut scans: Vec<Scan> = Vec::new();
    let mut items: Vec<DryRunItem> = plan
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let mut item = DryRunItem {
                target: target.written.clone(),
                ..DryRunItem::default()
            };
            match &target.action {
                Action::Unlink(key) => {
                    pipe.cmd("EXISTS").arg(key);
                    checked.push(index);
                }
                Action::Hdel { key, field } => {
                    pipe.cmd("HEXISTS").arg(key).arg(field);
                    checked.push(index);
                }
                Action::Scan(pattern) => scans.push(Scan::new(index, &target.setting, pattern)),
                Action::Skip(why) => item.skipped = Some(why.clone()),
            }
            item
        })
        .collect();
    if !pipe.is_empty() {
        let found: Vec<u64> = pipe.query_async(&mut *connection).await?;
        for (index, found) in checked.into_iter().zip(found) {
            items[index].matched = Some(found);
            if found > 0 {
                if let Action::Unlink(key) | Action::Hdel { key, .. } = &plan[index].action {
                    items[index].keys.push(key.clone());
                }
            }
        }
    }
    // One tally per target: a scan's `request` is its target's index.
    let mut tallies: Vec<Tally> = plan.iter().map(|_| Tally::default()).collect();
    run_scans(
        connection,
        &mut scans,
        ScanMode::Look,
        SCAN_COUNT,
        &mut tallies,
    )
    .await?;
    if let Some(failure) = tallies.into_iter().find_map(|t| t.failure) {
        return Err(failure.error);
    }
    for scan in scans {
        let item = &mut items[scan.request];
        item.matched = Some(u64::try_from(scan.seen.len()).unwrap_or(u64::MAX));
        item.keys = scan
            .seen
            .iter()
            .take(MAX_LISTED)
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect();
    }
    Ok(DryRun { items, note: None })
}
