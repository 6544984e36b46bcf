//! The erasure of many subjects at once, in steps of one round trip each: first every key and
//! hash field of every subject in one pipeline (`UNLINK`, `HDEL`), then the patterns, all of
//! them side by side, a `SCAN` page each per round trip, the keys a page found unlinked in the
//! next one. A single attempt is a batch of one.
//!
//! A command the server refuses fails its subject only; the connection failing fails them all.

use ::redis::aio::ConnectionLike;
use ::redis::{RedisError, RedisResult};

use super::plan::{Action, Target};
use super::scan::{run_scans, Scan, ScanMode};

/// What was erased for one subject, and the first command of its that failed.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub keys: u64,
    pub fields: u64,
    pub failure: Option<Failure>,
}

/// A command the server refused: which setting it came from, and the error.
#[derive(Debug)]
pub(super) struct Failure {
    pub setting: String,
    pub error: RedisError,
}

impl Tally {
    pub(super) fn fail(&mut self, setting: &str, error: RedisError) {
        self.failure.get_or_insert(Failure {
            setting: setting.to_owned(),
            error,
        });
    }
}

/// Erases every plan's targets; one [`Tally`] per plan, in order. `Err` when the connection
/// failed (what was deleted before stays deleted: every step can be made again).
pub(super) async fn erase(
    connection: &mut (impl ConnectionLike + Send),
    plans: &[Vec<Target>],
    scan_count: u32,
) -> RedisResult<Vec<Tally>> {
    let mut tallies: Vec<Tally> = plans.iter().map(|_| Tally::default()).collect();
    delete_keys_and_fields(connection, plans, &mut tallies).await?;
    let mut scans: Vec<Scan> = plans
        .iter()
        .enumerate()
        .flat_map(|(request, plan)| {
            plan.iter().filter_map(move |target| match &target.action {
                Action::Scan(pattern) => Some(Scan::new(request, &target.setting, pattern)),
                _ => None,
            })
        })
        .collect();
    run_scans(
        connection,
        &mut scans,
        ScanMode::Unlink,
        scan_count,
        &mut tallies,
    )
    .await?;
    Ok(tallies)
}

#[derive(Debug, Clone, Copy)]
enum Counted {
    Keys,
    Fields,
}

/// Step one: every plan's keys in one `UNLINK` per subject, each hash field in an `HDEL`.
async fn delete_keys_and_fields(
    connection: &mut (impl ConnectionLike + Send),
    plans: &[Vec<Target>],
    tallies: &mut [Tally],
) -> RedisResult<()> {
    let mut pipe = ::redis::pipe();
    pipe.ignore_errors();
    let mut owners: Vec<(usize, Counted, &str)> = Vec::new();
    for (request, plan) in plans.iter().enumerate() {
        let keys: Vec<&str> = plan
            .iter()
            .filter_map(|target| match &target.action {
                Action::Unlink(key) => Some(key.as_str()),
                _ => None,
            })
            .collect();
        if !keys.is_empty() {
            pipe.cmd("UNLINK").arg(&keys);
            owners.push((request, Counted::Keys, "keys"));
        }
        for target in plan {
            if let Action::Hdel { key, field } = &target.action {
                pipe.cmd("HDEL").arg(key).arg(field);
                owners.push((request, Counted::Fields, &target.setting));
            }
        }
    }
    if pipe.is_empty() {
        return Ok(());
    }
    let replies: Vec<RedisResult<u64>> = pipe.query_async(connection).await?;
    for ((request, counted, setting), reply) in owners.into_iter().zip(replies) {
        let tally = &mut tallies[request];
        match (reply, counted) {
            (Ok(n), Counted::Keys) => tally.keys += n,
            (Ok(n), Counted::Fields) => tally.fields += n,
            (Err(error), _) => tally.fail(setting, error),
        }
    }
    Ok(())
}
