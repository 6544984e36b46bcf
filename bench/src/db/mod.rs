//! The benchmark database: a fresh Postgres schema or SQLite file per run, migrated, with a
//! `raw_events` table of the same shape as `events` for the raw baseline, dropped at the end.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use lethe_domain::RequestId;
use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::projections::ProjectionStore;
use lethe_engine::root::Database;
use lethe_engine::store::keys::KeyStore;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{Backend as Opened, EventStore, PostgresStore, SqliteStore};
use lethe_engine::workflow::WorkflowStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use uuid::Uuid;

use crate::services::MASTER_KEY;

mod baseline;
mod counts;
mod streams;

pub use baseline::received_payload_bytes;
pub use streams::received_stream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        })
    }
}

/// Postgres copies `events` (columns, defaults, identity, primary key, unique constraints and
/// the global-order index; not the foreign key to `streams`).
const POSTGRES_RAW_EVENTS: &str =
    "CREATE TABLE raw_events (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES)";

const RAW_INSERT_COLUMNS: &str = "stream_id, version, event_type, schema_version, payload, \
     event_id, command_id, correlation_id, causation_id, actor, recorded_at, prev_hash, hash";

pub struct Db {
    pub backend: Backend,
    kind: Kind,
    probe: Probe,
}

/// The benchmark's own read pool on the database (see [`Db::probe`]).
#[derive(Debug, Clone)]
pub enum Probe {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Probe {
    /// The raw read baseline: one request's rows straight from the `events` table.
    pub async fn read_stream(&self, id: RequestId) -> Result<usize, String> {
        let rows = match self {
            Self::Postgres(pool) => {
                sqlx::query("SELECT * FROM events WHERE stream_id = $1 ORDER BY version")
                    .bind(id.as_uuid())
                    .fetch_all(pool)
                    .await
                    .map(|rows| rows.len())
            }
            Self::Sqlite(pool) => {
                sqlx::query("SELECT * FROM events WHERE stream_id = ?1 ORDER BY version")
                    .bind(id.to_string())
                    .fetch_all(pool)
                    .await
                    .map(|rows| rows.len())
            }
        };
        match rows {
            Ok(0) => Err(format!("no events for {id}")),
            Ok(count) => Ok(count),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

enum Kind {
    Postgres {
        store: Arc<PostgresStore>,
        schema: String,
        base_url: String,
        options: PgConnectOptions,
    },
    Sqlite {
        store: Arc<SqliteStore>,
        path: String,
        dir: tempfile::TempDir,
    },
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Postgres { schema, .. } => write!(f, "Db(postgres, schema {schema})"),
            Kind::Sqlite { path, .. } => write!(f, "Db(sqlite, {path})"),
        }
    }
}

/// Where [`Db::count_completed`] got to: `Completed` events after `start_position` so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompletedCounter {
    start_position: i64,
    transaction_id: i64,
    position: i64,
    completed: i64,
}

impl CompletedCounter {
    /// Counts from the log's start, keeping only events after `start_position`.
    pub const fn after(start_position: i64) -> Self {
        Self {
            start_position,
            transaction_id: 0,
            position: 0,
            completed: 0,
        }
    }
}

impl Db {
    /// A fresh, migrated database with an empty `raw_events` table.
    pub async fn create(backend: Backend, postgres_url: &str) -> anyhow::Result<Self> {
        let db = match backend {
            Backend::Postgres => {
                let schema = format!("lethe_bench_{}", Uuid::now_v7().simple());
                let admin = admin_pool(postgres_url).await?;
                sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .context("creating the benchmark schema")?;
                admin.close().await;
                let options =
                    connect_options(postgres_url)?.options([("search_path", schema.as_str())]);
                let store = PostgresStore::connect_with(options.clone())
                    .await
                    .context("connecting the Postgres store")?;
                let probe = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_lazy_with(options.clone());
                Self {
                    backend,
                    probe: Probe::Postgres(probe),
                    kind: Kind::Postgres {
                        store: Arc::new(store),
                        schema,
                        base_url: postgres_url.to_owned(),
                        options,
                    },
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::Builder::new().prefix("lethe-bench-").tempdir()?;
                let path = dir.path().join("lethe.db").display().to_string();
                let store = SqliteStore::open(&path)
                    .await
                    .map_err(|e| anyhow!("opening {path}: {e}"))?;
                // Read-only, like the store's own reader pool (WAL: readers never block the
                // writer).
                let probe = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_lazy_with(
                        SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
                            .read_only(true)
                            .busy_timeout(Duration::from_secs(10)),
                    );
                Self {
                    backend,
                    probe: Probe::Sqlite(probe),
                    kind: Kind::Sqlite {
                        store: Arc::new(store),
                        path,
                        dir,
                    },
                }
            }
        };
        if let Err(e) = db.prepare().await {
            let _ = db.destroy().await;
            return Err(e.context(format!("preparing the {backend} benchmark database")));
        }
        Ok(db)
    }

    async fn prepare(&self) -> anyhow::Result<()> {
        match &self.kind {
            Kind::Postgres { store, .. } => {
                store.migrate().await?;
                sqlx::raw_sql(POSTGRES_RAW_EVENTS)
                    .execute(store.pool())
                    .await?;
            }
            Kind::Sqlite { store, .. } => {
                store.migrate().await?;
                // SQLite has no `LIKE`: the twin is made by `events`' own definition as the
                // migrations left it (columns, keys, unique constraints), renamed.
                let events: String = sqlx::query_scalar(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
                )
                .fetch_one(store.writer())
                .await?;
                let body = events
                    .find('(')
                    .map(|at| &events[at..])
                    .ok_or_else(|| anyhow!("unexpected definition of events: {events}"))?;
                sqlx::raw_sql(&format!("CREATE TABLE raw_events {body}"))
                    .execute(store.writer())
                    .await?;
            }
        }
        Ok(())
    }

    pub fn events(&self) -> Arc<dyn EventStore> {
        match &self.kind {
            Kind::Postgres { store, .. } => store.clone(),
            Kind::Sqlite { store, .. } => store.clone(),
        }
    }

    pub fn projections(&self) -> Arc<dyn ProjectionStore> {
        match &self.kind {
            Kind::Postgres { store, .. } => store.clone(),
            Kind::Sqlite { store, .. } => store.clone(),
        }
    }

    pub fn keys(&self) -> Arc<dyn KeyStore> {
        match &self.kind {
            Kind::Postgres { store, .. } => store.clone(),
            Kind::Sqlite { store, .. } => store.clone(),
        }
    }

    /// The stores of this database, as `lethe serve` opens them.
    pub fn database(&self) -> Database {
        Database::from(match &self.kind {
            Kind::Postgres { store, .. } => Opened::Postgres(store.clone()),
            Kind::Sqlite { store, .. } => Opened::Sqlite(store.clone()),
        })
    }

    /// The requests service as `lethe serve` builds it: projections, and subjects sealed under
    /// the master key.
    pub fn requests(&self, config: Arc<Config>) -> Requests {
        Requests::new(self.events(), config)
            .with_projections(self.projections())
            .with_sealing(MasterKey::from_bytes(MASTER_KEY), self.keys())
    }

    pub fn workflow(&self) -> Arc<dyn WorkflowStore> {
        match &self.kind {
            Kind::Postgres { store, .. } => store.clone(),
            Kind::Sqlite { store, .. } => store.clone(),
        }
    }

    /// The connection options of this Postgres database (its schema first on the search
    /// path); `None` on SQLite.
    pub fn pg_options(&self) -> Option<PgConnectOptions> {
        match &self.kind {
            Kind::Postgres { options, .. } => Some(options.clone()),
            Kind::Sqlite { .. } => None,
        }
    }

    /// The URL `lethe serve` opens for this same database (and schema).
    pub fn database_url(&self) -> String {
        match &self.kind {
            Kind::Postgres {
                schema, base_url, ..
            } => {
                let separator = if base_url.contains('?') { '&' } else { '?' };
                format!("{base_url}{separator}options=-c%20search_path%3D{schema}")
            }
            Kind::Sqlite { path, .. } => format!("sqlite://{path}"),
        }
    }

    /// A pool for the benchmark's own reads, beside the store's: probes and the raw read
    /// baseline never take a connection the engine needs.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// Closes the pools and drops the schema (Postgres) or the file (SQLite).
    pub async fn destroy(self) -> anyhow::Result<()> {
        self.probe.close().await;
        match self.kind {
            Kind::Postgres {
                store,
                schema,
                base_url,
                ..
            } => {
                tokio::time::timeout(Duration::from_secs(30), store.pool().close())
                    .await
                    .ok();
                let admin = admin_pool(&base_url).await?;
                sqlx::raw_sql(&format!(
                    "SET lock_timeout = '30s'; DROP SCHEMA {schema} CASCADE"
                ))
                .execute(&admin)
                .await
                .with_context(|| format!("dropping the benchmark schema {schema}"))?;
                admin.close().await;
            }
            Kind::Sqlite { store, dir, .. } => {
                store.writer().close().await;
                dir.close()?;
            }
        }
        Ok(())
    }
}

/// The server `url` names, connected as the `lethe` binary connects: without TLS unless the
/// URL asks (`sslmode=`). The benchmark's sqlx is built with TLS for the peer, esrs, whose
/// Postgres store turns it on; left at sqlx's `prefer`, every connection here would negotiate
/// TLS with a server that offers it (Debian's does), which `lethe` (built without TLS) never
/// does: each connection would load the system's CA bundle (some 750 million instructions) and
/// every statement would be encrypted.
pub(crate) fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(if url.contains("sslmode=") {
        options
    } else {
        options.ssl_mode(PgSslMode::Disable)
    })
}

async fn admin_pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect_options(url)?)
        .await
        .with_context(|| {
            format!(
                "connecting to Postgres at {} (set LETHE_BENCH_POSTGRES_URL)",
                redact(url)
            )
        })
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The Postgres server's version string.
pub async fn postgres_version(url: &str) -> anyhow::Result<String> {
    let admin = admin_pool(url).await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&admin)
        .await?;
    admin.close().await;
    Ok(version)
}
