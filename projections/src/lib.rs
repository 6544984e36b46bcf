//! Projections of Lethe: pure folds from events to the rows that list views and dashboards
//! read. Each fold is a function `(Option<Row>, &Event) -> Row`; the engine runs it through a
//! checkpointed subscription and persists the rows (see `engine/src/projections`), and can
//! rebuild them from the log at any time.
//!
//! - [`requests`]: one row per request (status, dates, cleaners), without personal data.
//! - [`tallies`]: the counters of the figures kept beside those rows (stats, annual report).

pub mod requests;
pub mod tallies;
