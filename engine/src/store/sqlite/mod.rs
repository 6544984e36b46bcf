//! The SQLite event store: the embedded default, a single file, no server.
//!
//! SQLite lets one writer in at a time, so positions are assigned in commit order and a plain
//! `position > checkpoint` read is gap-safe. All writes go through one connection (so this
//! process never fights itself for the write lock); reads use a small pool of their own. WAL
//! mode lets readers run beside the writer, and `synchronous = FULL` makes a committed append
//! survive a power cut.

mod append;
mod read;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::group::GroupCommit;
use super::{OpenError, StoreError};
use append::batch_writer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const EVENT_COLUMNS: &str = "position, stream_id, version, event_type, schema_version, payload, \
     event_id, command_id, correlation_id, causation_id, actor, recorded_at, prev_hash, hash";

/// Appends written in one transaction at most.
const MAX_BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    group: GroupCommit,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file at `path`, and its directory.
    pub async fn open(path: &str) -> Result<Self, OpenError> {
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Directory {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(StoreError::from)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted rows (shredded data keys) are overwritten, not left in free pages.
            .pragma("secure_delete", "ON")
            // Statement journals (a multi-row insert that may fail part way is undone alone)
            // in memory, not in a temporary file written and read back for every batch.
            .pragma("temp_store", "MEMORY")
            .busy_timeout(Duration::from_secs(10));
        // The one writing connection keeps more pages in memory (32 MiB instead of 2): a batch
        // touches pages all over the blind-index and event indexes, and re-reading them from
        // the file was a tenth of its time. (Checkpointing less often, every 4,000 pages
        // instead of 1,000, made bulk intake faster still but added 10-15 ms to the p99 of
        // single submissions: the commit that checkpoints holds the writer longer.)
        let writer_options = options.clone().pragma("cache_size", "-32768");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_options)
            .await
            .map_err(StoreError::from)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(StoreError::from)?;
        // One batch writer: there is one writing connection.
        let group = GroupCommit::start(1, MAX_BATCH, batch_writer(writer.clone()));
        Ok(Self {
            writer,
            reader,
            group,
        })
    }

    fn group_writer(&self) -> super::group::WriteBatch {
        batch_writer(self.writer.clone())
    }

    /// The pool that writes; use it for anything that must see the latest commit.
    pub const fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool that reads (WAL: each statement sees every commit made before it started).
    pub const fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::store::migration_renumbering::renumber_sqlite(&self.writer, &MIGRATOR).await?;
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }
}
