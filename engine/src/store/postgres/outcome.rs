//! What becomes of each append of a batch while it is being written on Postgres: shared by
//! the general batch ([`super::append`]), the batch of new streams ([`super::intake`]) and the
//! batch insert's columns ([`super::columns`]).

use crate::store::RecordedEvent;

/// What became of one append of a batch while it is being written.
pub(super) enum Outcome {
    /// Its events will be written (rows prepared, positions filled in after the insert).
    Write(Vec<RecordedEvent>),
    /// Its command id was taken: answered with the first result after the transaction.
    Duplicate(String),
    /// The stream was not at the expected version (`None`: look the version up afterwards).
    Conflict(Option<i64>),
    /// Nothing to write.
    Empty,
}

/// How many versions the events advance a stream by.
pub(super) fn count(events: &[lethe_domain::Event]) -> i64 {
    i64::try_from(events.len()).unwrap_or(i64::MAX)
}
