//! Patterns walked with `SCAN MATCH … COUNT …` (never `KEYS`, which blocks the server), all of
//! them side by side: each round trip carries the next page of every pattern still open and
//! the `UNLINK` of the keys the previous page found.

use std::collections::BTreeSet;

use ::redis::aio::ConnectionLike;
use ::redis::{RedisResult, Value};

use super::erase::Tally;

/// What to do with the keys a pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanMode {
    /// Delete them.
    Unlink,
    /// Only note them ([`Scan::seen`]): a dry run.
    Look,
}

/// One pattern of one subject, walked page by page.
#[derive(Debug)]
pub(super) struct Scan {
    /// Which plan (subject) it belongs to.
    pub request: usize,
    pub setting: String,
    pattern: String,
    /// The cursor of the next page; `None` once the server answered cursor 0.
    cursor: Option<u64>,
    /// Keys of the last page, not yet deleted.
    found: Vec<Vec<u8>>,
    /// Every key matched ([`ScanMode::Look`] only): SCAN may return a key twice.
    pub seen: BTreeSet<Vec<u8>>,
}

impl Scan {
    pub(super) fn new(request: usize, setting: &str, pattern: &str) -> Self {
        Self {
            request,
            setting: setting.to_owned(),
            pattern: pattern.to_owned(),
            cursor: Some(0),
            found: Vec::new(),
            seen: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Sent {
    Unlink,
    Page,
}

/// Walks every scan to its end (or its subject's first failure), a round trip per page.
pub(super) async fn run_scans(
    connection: &mut (impl ConnectionLike + Send),
    scans: &mut [Scan],
    mode: ScanMode,
    count: u32,
    tallies: &mut [Tally],
) -> RedisResult<()> {
    loop {
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        let mut owners: Vec<(usize, Sent)> = Vec::new();
        for (index, scan) in scans.iter_mut().enumerate() {
            if tallies[scan.request].failure.is_some() {
                continue;
            }
            let found = std::mem::take(&mut scan.found);
            if !found.is_empty() && mode == ScanMode::Unlink {
                pipe.cmd("UNLINK").arg(found);
                owners.push((index, Sent::Unlink));
            }
            if let Some(cursor) = scan.cursor {
                pipe.cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&scan.pattern)
                    .arg("COUNT")
                    .arg(count);
                owners.push((index, Sent::Page));
            }
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let replies: Vec<RedisResult<Value>> = pipe.query_async(&mut *connection).await?;
        for ((index, sent), reply) in owners.into_iter().zip(replies) {
            let scan = &mut scans[index];
            let tally = &mut tallies[scan.request];
            let read = reply.and_then(|value| match sent {
                Sent::Unlink => {
                    tally.keys += ::redis::from_redis_value::<u64>(value)?;
                    Ok(())
                }
                Sent::Page => {
                    let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::from_redis_value(value)?;
                    scan.cursor = (next != 0).then_some(next);
                    if mode == ScanMode::Look {
                        scan.seen.extend(keys);
                    } else {
                        scan.found = keys;
                    }
                    Ok(())
                }
            });
            if let Err(error) = read {
                tally.fail(&scan.setting, error);
            }
        }
    }
}
