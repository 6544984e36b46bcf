//! The benchmark database: a fresh Postgres schema or SQLite file per run, migrated, with a
//! `raw_events` table of the same shape as `events` for the raw baseline, dropped at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use chrono::SecondsFormat;
use lethe_domain::command::Receive;
use lethe_domain::{Aggregate, Command, DeletionRequest, Jurisdiction, RequestId, RequestState};
use lethe_domain::{Event, Subject};
use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::read_models::ReadModelStore;
use lethe_engine::root::Database;
use lethe_engine::store::keys::KeyStore;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{now_micros, EventStore, PostgresStore, SqliteStore};
use lethe_engine::workflow::WorkflowStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use uuid::Uuid;

use crate::load::{self, LoadResult};
use crate::services::MASTER_KEY;

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
                let options = PgConnectOptions::from_str(postgres_url)?
                    .options([("search_path", schema.as_str())]);
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

    pub fn read_models(&self) -> Arc<dyn ReadModelStore> {
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
        Database {
            events: self.events(),
            workflow: self.workflow(),
            read_models: self.read_models(),
            keys: self.keys(),
        }
    }

    /// The requests service as `lethe serve` builds it: read models, and subjects sealed under
    /// the master key.
    pub fn requests(&self, config: Arc<Config>) -> Requests {
        Requests::new(self.events(), config)
            .with_read_models(self.read_models())
            .with_sealing(MasterKey::from_bytes(MASTER_KEY), self.keys())
    }

    pub fn workflow(&self) -> Arc<dyn WorkflowStore> {
        match &self.kind {
            Kind::Postgres { store, .. } => store.clone(),
            Kind::Sqlite { store, .. } => store.clone(),
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

    /// Runs a query that returns one integer (with `$1` bound to `after_position`).
    async fn scalar(&self, sql: &str, after_position: i64) -> anyhow::Result<i64> {
        let value: Option<i64> = match &self.probe {
            Probe::Postgres(pool) => {
                sqlx::query_scalar(sql)
                    .bind(after_position)
                    .fetch_one(pool)
                    .await?
            }
            Probe::Sqlite(pool) => {
                sqlx::query_scalar(&sql.replace("$1", "?1"))
                    .bind(after_position)
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(value.unwrap_or(0))
    }

    /// The highest position in the log (0 when empty).
    pub async fn head_position(&self) -> anyhow::Result<i64> {
        self.scalar(
            "SELECT max(position) FROM events WHERE position > $1",
            i64::MIN,
        )
        .await
    }

    /// Seconds from `since` (a Unix time in seconds) to the last `event_type` event after
    /// `position` (0 when there is none): how long a phase of the workflow took.
    pub async fn last_event_after(
        &self,
        position: i64,
        event_type: &str,
        since: f64,
    ) -> anyhow::Result<f64> {
        let last: Option<f64> = match &self.probe {
            Probe::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT extract(epoch FROM max(recorded_at))::float8 FROM events \
                     WHERE position > $1 AND event_type = $2",
                )
                .bind(position)
                .bind(event_type)
                .fetch_one(pool)
                .await?
            }
            Probe::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT (julianday(max(recorded_at)) - 2440587.5) * 86400.0 FROM events \
                     WHERE position > ?1 AND event_type = ?2",
                )
                .bind(position)
                .bind(event_type)
                .fetch_one(pool)
                .await?
            }
        };
        Ok(last.map_or(0.0, |at| (at - since).max(0.0)))
    }

    /// Events after `position`.
    pub async fn count_events_after(&self, position: i64) -> anyhow::Result<i64> {
        self.scalar("SELECT count(*) FROM events WHERE position > $1", position)
            .await
    }

    /// `Completed` events after `counter.after`, counted incrementally: each call reads only
    /// the events committed since the previous one (in the log's read order, so none is
    /// missed on Postgres, where positions are not commit-ordered). A full count at every
    /// poll would cost the machine under measurement CPU that grows with the log: at 700,000
    /// events, a large share of a core.
    pub async fn count_completed(&self, counter: &mut CompletedCounter) -> anyhow::Result<i64> {
        match &self.probe {
            Probe::Postgres(pool) => {
                let (completed, last): (i64, Option<Vec<i64>>) = sqlx::query_as(
                    "WITH batch AS ( \
                       SELECT events.transaction_id::text::bigint AS tx, events.position, \
                              events.event_type FROM events \
                       WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2) \
                         AND events.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                       ORDER BY events.transaction_id, events.position LIMIT 200000) \
                     SELECT count(*) FILTER (WHERE event_type = 'Completed' AND position > $3), \
                            max(ARRAY[tx, position]) FROM batch",
                )
                .bind(counter.transaction_id.to_string())
                .bind(counter.position)
                .bind(counter.start_position)
                .fetch_one(pool)
                .await?;
                if let Some([tx, position]) = last.as_deref() {
                    counter.transaction_id = *tx;
                    counter.position = *position;
                }
                counter.completed += completed;
            }
            Probe::Sqlite(pool) => {
                // One writer: positions are in commit order.
                let (completed, last): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE event_type = 'Completed'), max(position) \
                     FROM events WHERE position > ?1",
                )
                .bind(counter.position.max(counter.start_position))
                .fetch_one(pool)
                .await?;
                if let Some(last) = last {
                    counter.position = last;
                }
                counter.completed += completed;
            }
        }
        Ok(counter.completed)
    }

    /// Fails, naming the numbers, when the server cannot take `wanted` more connections (the
    /// baseline opens one per client; waiting for them would end in a bare pool time-out).
    async fn check_free_connections(&self, wanted: u32) -> anyhow::Result<()> {
        let Probe::Postgres(pool) = &self.probe else {
            return Ok(());
        };
        let (max, reserved, open): (i64, i64, i64) = sqlx::query_as(
            "SELECT current_setting('max_connections')::int8, \
             current_setting('superuser_reserved_connections')::int8, \
             (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
        )
        .fetch_one(pool)
        .await
        .context("reading the server's connection limits")?;
        let free = max - reserved - open;
        if i64::from(wanted) > free {
            anyhow::bail!(
                "the baseline at {wanted} clients needs {wanted} connections, but the server \
                 has {free} free (max_connections {max}, {reserved} reserved, {open} open): \
                 lower the concurrency (--dispatch-concurrency for lifecycle and memory) or \
                 raise max_connections"
            );
        }
        Ok(())
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

async fn admin_pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
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

/// The fixed parts of a baseline row: a real `Received` payload, as Lethe would store it.
#[derive(Debug)]
struct RawRow {
    event_type: &'static str,
    actor: &'static str,
    payload: serde_json::Value,
    prev_hash: String,
}

impl RawRow {
    fn template() -> anyhow::Result<Self> {
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

/// 64 random hex digits, like a SHA-256.
fn random_hash() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

/// The first `len` (at most 10) events of a realistic request: `Received`, both reminders,
/// three holds placed and released, and a deadline extension — decided by the aggregate so
/// that they fold and replay like real ones.
pub fn received_stream(
    config: &Config,
    len: usize,
    n: u64,
) -> anyhow::Result<(RequestId, Vec<Event>)> {
    let id = RequestId::from_uuid(Uuid::now_v7());
    let at = now_micros();
    let jurisdiction = Jurisdiction::parse("gdpr").map_err(|e| anyhow!("{e}"))?;
    let policy = config
        .request_policy(&jurisdiction)
        .ok_or_else(|| anyhow!("no gdpr policy"))?;
    let subject = Subject::parse(BTreeMap::from([
        ("user_id".to_owned(), format!("bench-user-{n}")),
        ("email".to_owned(), format!("bench-user-{n}@example.com")),
    ]))
    .map_err(|e| anyhow!("{e}"))?;
    let hold = |n: u32| Command::PlaceHold {
        at,
        reason: format!("litigation hold #{n} pending review by legal"),
    };
    let release = || Command::ReleaseHold {
        at,
        reason: Some("released by legal".to_owned()),
    };
    let commands = vec![
        Command::Receive(Receive {
            request_id: id,
            subject: subject.into(),
            jurisdiction,
            source: Some("benchmark".to_owned()),
            reason: Some("account closed".to_owned()),
            external_id: None,
            tags: vec!["bench".to_owned()],
            received_at: at,
            policy,
        }),
        Command::RecordReminderSent {
            index: 0,
            at,
            calls: 1,
        },
        Command::RecordReminderSent {
            index: 1,
            at,
            calls: 1,
        },
        hold(1),
        release(),
        hold(2),
        release(),
        hold(3),
        release(),
        Command::ExtendDeadline {
            at,
            by: lethe_domain::Span::months(1),
            reason: "complex request".to_owned(),
        },
    ];
    let mut state = RequestState::NotReceived;
    let mut events = Vec::with_capacity(len);
    for command in commands.into_iter().take(len) {
        for event in DeletionRequest::handle_command(&state, command).map_err(|e| anyhow!("{e}"))? {
            state = DeletionRequest::apply_event(state, event.clone());
            events.push(event);
        }
    }
    Ok((id, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_stream_has_ten_events() {
        let (_, events) = received_stream(&Config::default(), 10, 7).unwrap();
        let types: Vec<_> = events.iter().map(Event::event_type).collect();
        assert_eq!(
            types,
            [
                "Received",
                "ReminderSent",
                "ReminderSent",
                "HoldPlaced",
                "HoldReleased",
                "HoldPlaced",
                "HoldReleased",
                "HoldPlaced",
                "HoldReleased",
                "DeadlineExtended"
            ]
        );
        assert_eq!(
            received_stream(&Config::default(), 3, 7).unwrap().1.len(),
            3
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn a_hash_has_64_hex_digits() {
        let hash = random_hash();
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
