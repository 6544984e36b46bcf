//! The raw insert baseline: rows of the same shape as `events`, one per transaction.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use chrono::SecondsFormat;
use lethe_engine::config::Config;
use lethe_engine::store::now_micros;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::streams::{random_hash, received_stream};
use super::{Backend, Db, Kind, Probe, RAW_INSERT_COLUMNS};
use crate::load::{self, LoadResult};

/// How long closed connections may take to leave the server.
const CONNECTIONS_FREED_WITHIN: Duration = Duration::from_secs(10);

impl Db {
    /// Fails, naming the numbers, when the server cannot take `wanted` more connections (the
    /// baseline opens one per client; waiting for them would end in a bare pool time-out).
    /// Connections of a pool just closed (the peer's, measured before) leave the server a
    /// moment after the close returns, so the count is read again for up to
    /// [`CONNECTIONS_FREED_WITHIN`] before the run fails.
    async fn check_free_connections(&self, wanted: u32) -> anyhow::Result<()> {
        let Probe::Postgres(pool) = &self.probe else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + CONNECTIONS_FREED_WITHIN;
        loop {
            let (max, reserved, open): (i64, i64, i64) = sqlx::query_as(
                "SELECT current_setting('max_connections')::int8, \
                 current_setting('superuser_reserved_connections')::int8, \
                 (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
            )
            .fetch_one(pool)
            .await
            .context("reading the server's connection limits")?;
            let free = max - reserved - open;
            if i64::from(wanted) <= free {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the baseline at {wanted} clients needs {wanted} connections, but the server \
                     has {free} free (max_connections {max}, {reserved} reserved, {open} open): \
                     lower the concurrency (--dispatch-concurrency for lifecycle and memory) or \
                     raise max_connections"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The raw baseline: plain single-row `INSERT` statements (each its own transaction, one
    /// round trip) of event-sized rows into `raw_events`, from `concurrency` tasks, for
    /// `duration`. Postgres gets a pool of `concurrency` connections, opened before the clock
    /// starts; SQLite goes through the store's single writing connection, as Lethe does.
    pub async fn baseline(
        &self,
        concurrency: usize,
        duration: Duration,
        max_rows: u64,
    ) -> anyhow::Result<LoadResult> {
        let row = Arc::new(RawRow::template()?);
        let placeholders: Vec<String> = (1..=13)
            .map(|i| match self.backend {
                Backend::Postgres => format!("${i}"),
                Backend::Sqlite => format!("?{i}"),
            })
            .collect();
        let sql: Arc<str> = Arc::from(format!(
            "INSERT INTO raw_events ({RAW_INSERT_COLUMNS}) VALUES ({})",
            placeholders.join(", ")
        ));
        // The payload as the JSON text both stores keep (ADR 12).
        let payload: Arc<str> = Arc::from(row.payload.to_string());
        match &self.kind {
            Kind::Postgres { options, .. } => {
                let size = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
                self.check_free_connections(size).await?;
                let pool = PgPoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options.clone())
                    .await
                    .context("connecting the baseline pool")?;
                // Open every connection before the clock starts.
                let warm = futures::future::try_join_all((0..size).map(|_| pool.acquire()))
                    .await
                    .with_context(|| format!("opening the baseline's {size} connections"))?;
                drop(warm);
                let run_pool = pool.clone();
                let result = load::run(concurrency, duration, max_rows, move |_| {
                    let pool = run_pool.clone();
                    let row = row.clone();
                    let sql = sql.clone();
                    let payload = payload.clone();
                    async move {
                        sqlx::query(&sql)
                            .bind(Uuid::now_v7())
                            .bind(1_i64)
                            .bind(row.event_type)
                            .bind(1_i32)
                            .bind(&*payload)
                            .bind(Uuid::now_v7())
                            .bind(None::<String>)
                            .bind(Uuid::now_v7())
                            .bind(None::<Uuid>)
                            .bind(row.actor)
                            .bind(now_micros())
                            .bind(&row.prev_hash)
                            .bind(random_hash())
                            .execute(&pool)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }
                })
                .await;
                pool.close().await;
                Ok(result)
            }
            Kind::Sqlite { store, .. } => {
                let pool = store.writer().clone();
                Ok(load::run(concurrency, duration, max_rows, move |_| {
                    let pool = pool.clone();
                    let row = row.clone();
                    let sql = sql.clone();
                    let payload = payload.clone();
                    async move {
                        sqlx::query(&sql)
                            .bind(Uuid::now_v7().to_string())
                            .bind(1_i64)
                            .bind(row.event_type)
                            .bind(1_i32)
                            .bind(&*payload)
                            .bind(Uuid::now_v7().to_string())
                            .bind(None::<String>)
                            .bind(Uuid::now_v7().to_string())
                            .bind(None::<String>)
                            .bind(row.actor)
                            .bind(now_micros().to_rfc3339_opts(SecondsFormat::Micros, true))
                            .bind(&row.prev_hash)
                            .bind(random_hash())
                            .execute(&pool)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }
                })
                .await)
            }
        }
    }
}

/// The fixed parts of a baseline row: a real `Received` payload, as Lethe would store it.
#[derive(Debug)]
pub(super) struct RawRow {
    event_type: &'static str,
    actor: &'static str,
    payload: serde_json::Value,
    prev_hash: String,
}

impl RawRow {
    pub(super) fn template() -> anyhow::Result<Self> {
        let events = received_stream(&Config::default(), 1, 0)?.1;
        let event = events
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no Received event"))?;
        Ok(Self {
            event_type: "Received",
            actor: "anonymous",
            payload: event.payload(),
            prev_hash: "0".repeat(64),
        })
    }
}

/// The size in bytes of a typical `Received` payload (the baseline's row payload).
pub fn received_payload_bytes() -> usize {
    RawRow::template().map_or(0, |row| row.payload.to_string().len())
}
