//! The Postgres event store, for production and for several engine instances at once.
//!
//! Gap safety: positions come from an identity column, so they are handed out in insert order
//! but become visible in commit order. A reader that simply followed positions could pass a
//! position whose transaction commits later and never see it. Every event therefore records
//! its writing transaction (`pg_current_xact_id()`), and readers take only events whose
//! transaction is older than the oldest one still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`), in (transaction id, position) order. All such
//! transactions have finished, so nothing can appear later below the reader's checkpoint.

mod append;
mod columns;
mod intake;
mod outcome;
mod read;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

use super::group::GroupCommit;
use super::StoreError;
use append::batch_writer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const EVENT_COLUMNS: &str = "position, transaction_id::text::bigint AS transaction_id, stream_id, \
     version, event_type, schema_version, payload, event_id, command_id, correlation_id, \
     causation_id, actor, recorded_at, prev_hash, hash";

/// Appends written in one transaction at most.
const MAX_BATCH: usize = 512;
/// Batches being written at once (appends are spread over them by stream). Two: one batch can
/// be sent while the other commits. Eight made smaller batches and a lower `ingest` ratio on
/// two cores (docs/PERFORMANCE.md) without helping `lifecycle`.
const WRITERS: usize = 2;
/// Connections: the writers' plus room for reads, subscriptions and job claims.
const POOL_SIZE: u32 = 24;
/// How long a call waits for a connection when no `[database] acquire_timeout` applies (the
/// command-line tools, tests): they have no caller waiting on a quick answer. `lethe serve`
/// waits as long as its configuration says (1 s by default).
pub const TOOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between connection attempts while connecting to an unreachable database.
const STARTUP_RETRY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    group: GroupCommit,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        Self::connect_with(options).await
    }

    /// Connects with explicit options (tests use them to put each test in its own schema).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        Self::connect_with_timeout(options, TOOL_ACQUIRE_TIMEOUT).await
    }

    /// Connects with explicit options; every call waits at most `acquire_timeout` for a
    /// connection (a pooled one, or a new one opened meanwhile), then fails with
    /// [`StoreError::Unavailable`]. A pooled connection is checked before use, so one the
    /// server closed or reset is replaced rather than handed out.
    ///
    /// Connecting itself waits up to [`TOOL_ACQUIRE_TIMEOUT`] for an unreachable database,
    /// however short `acquire_timeout` is: a server that starts (or restarts) beside Lethe
    /// should not stop it from starting.
    pub async fn connect_with_timeout(
        options: PgConnectOptions,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        // No JIT: every statement here is short, and a cost estimate past `jit_above_cost`
        // (a claim's stream reads on a large log) made Postgres compile code for each call.
        let options = options.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(acquire_timeout)
            .test_before_acquire(true)
            .connect_lazy_with(options);
        let started = tokio::time::Instant::now();
        loop {
            match pool.acquire().await.map_err(StoreError::from) {
                Ok(_) => break,
                Err(error)
                    if error.is_unavailable() && started.elapsed() < TOOL_ACQUIRE_TIMEOUT =>
                {
                    tracing::info!(error = %error, "waiting for the database");
                    tokio::time::sleep(STARTUP_RETRY).await;
                }
                Err(error) => return Err(error),
            }
        }
        let write = batch_writer(pool.clone());
        let group = GroupCommit::start(WRITERS, MAX_BATCH, write);
        Ok(Self { pool, group })
    }

    fn group_writer(&self) -> super::group::WriteBatch {
        batch_writer(self.pool.clone())
    }

    pub const fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations from `migrations/postgres`; a no-op when up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}
