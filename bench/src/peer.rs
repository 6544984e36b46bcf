//! The peer event store: esrs 0.18's `PgStore`, the store of the aggregate library Lethe's
//! domain is written against, measured on the same Postgres database (in the run's schema) with
//! the same event: one new stream per command, carrying the `Received` event the aggregate
//! decides for a realistic submission. It does less than Lethe (no HTTP, no sealing, no blind
//! index, no hash chain, no idempotency), which is the point of comparing with it.

use std::sync::Arc;
use std::time::Duration;

use esrs::store::postgres::{PgStore, PgStoreBuilder};
use esrs::store::EventStore as _;
use esrs::AggregateState;
use lethe_domain::DeletionRequest;
use lethe_engine::config::Config;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::db::received_stream;
use crate::load::{self, LoadResult};

/// esrs's store of `DeletionRequest` events, its table made by its own migrations, on a pool
/// of its own.
#[derive(Clone)]
pub struct Peer {
    store: PgStore<DeletionRequest>,
    pool: PgPool,
    config: Arc<Config>,
}

impl Peer {
    /// Connects `connections` connections to the database `options` name (the run's schema
    /// first on the search path) and lets esrs create its table there.
    pub async fn connect(options: PgConnectOptions, connections: usize) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(connections.max(1))?)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        let store = PgStoreBuilder::new(pool.clone()).try_build().await?;
        Ok(Self {
            store,
            pool,
            config: Arc::new(Config::default()),
        })
    }

    /// One level of the peer's load, measured like Lethe's: a pool of `concurrency`
    /// connections, warmed up outside the measurement, then new streams of one `Received`
    /// event each from `concurrency` clients for at most `duration` or `max_ops` streams; the
    /// pool is closed after, so that the server's connections are free for what follows.
    /// `None` where there is no peer: a database without Postgres options (SQLite).
    pub async fn measure(
        options: Option<&PgConnectOptions>,
        concurrency: usize,
        duration: Duration,
        max_ops: u64,
    ) -> anyhow::Result<Option<LoadResult>> {
        let Some(options) = options else {
            return Ok(None);
        };
        let peer = Self::connect(options.clone(), concurrency).await?;
        let warm = peer
            .append(concurrency, duration, 2 * concurrency as u64)
            .await;
        if warm.errors > 0 {
            anyhow::bail!("esrs warm-up failed: {:?}", warm.first_error);
        }
        let result = peer.append(concurrency, duration, max_ops).await;
        peer.pool.close().await;
        Ok(Some(result))
    }

    /// New streams of one `Received` event each, from `concurrency` clients, for at most
    /// `duration` or `max_ops` streams.
    pub async fn append(&self, concurrency: usize, duration: Duration, max_ops: u64) -> LoadResult {
        let peer = self.clone();
        load::run(concurrency, duration, max_ops, move |n| {
            let peer = peer.clone();
            async move {
                let (id, events) =
                    received_stream(&peer.config, 1, n).map_err(|e| e.to_string())?;
                let mut state = AggregateState::with_id(*id.as_uuid());
                peer.store
                    .persist(&mut state, events)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await
    }
}
