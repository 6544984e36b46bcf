//! The benchmark scenarios: `ingest`, `append`, `bulk`, `lifecycle`, `lifecycle-sql`, `rebuild`, `replay`, `memory`, `scale`; and `instructions` (valgrind), not in `all`.
//! Each runs on one fresh database, prints one line per figure, and measures the raw insert
//! baseline on the same database in the same run.

mod append;
mod bulk;
mod ingest;
mod instructions;
mod lifecycle;
mod lifecycle_sql;
mod memory;
mod rebuild;
mod replay;
mod scale;

pub use append::append;
pub use bulk::bulk;
pub use ingest::ingest;
pub use instructions::{instructions, ops, Operation};
pub use lifecycle::lifecycle;
pub use lifecycle_sql::lifecycle_sql;
pub use memory::memory;
pub use rebuild::rebuild;
pub use replay::replay;
pub use scale::scale;

use uuid::Uuid;

/// Client concurrency levels of `ingest`.
pub(crate) const INGEST_LEVELS: [usize; 4] = [1, 8, 32, 64];
/// Clients submitting the lifecycle and memory workloads.
pub(crate) const SUBMIT_CONCURRENCY: usize = 32;
/// Clients reading histories in `replay`.
pub(crate) const REPLAY_CONCURRENCY: usize = 8;
/// Tasks filling the log in `replay`.
pub(crate) const FILL_CONCURRENCY: usize = 32;
/// Events per stream in the replay log.
pub(crate) const EVENTS_PER_STREAM: u64 = 10;

pub(crate) fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "no"
    }
}

pub(crate) fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        value / baseline
    } else {
        0.0
    }
}

/// A short unique tag for the subjects of one run.
pub(crate) fn run_tag() -> String {
    let id = Uuid::now_v7().simple().to_string();
    id[id.len() - 8..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_of_nothing_are_zero() {
        assert!(ratio(5.0, 0.0).abs() < 1e-9);
        assert!((ratio(5.0, 10.0) - 0.5).abs() < 1e-9);
    }
}
