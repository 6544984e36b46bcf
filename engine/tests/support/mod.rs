//! Shared test fixtures: a fresh store per test on real databases.
//!
//! Postgres tests each get a schema of their own in the database named by
//! `LETHE_TEST_POSTGRES_URL` (the test script creates a fresh one per run), so they can run in
//! parallel and never see each other's events. SQLite tests each get a file in a temp dir.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod binary;
pub mod chaos_proxy;
pub mod config;
pub mod due;
pub mod dump;
pub mod engine;
pub mod fake_service;
pub mod metrics;
pub mod projection;

use std::str::FromStr;
use std::sync::Arc;

use lethe_engine::store::{EventStore, PostgresStore, SqliteStore};
use sqlx::postgres::PgConnectOptions;

/// Runs each listed `async fn(TestStore)` on a fresh database of each backend: expands to
/// `mod postgres` and `mod sqlite`, each with one `#[tokio::test]` per function that hands it
/// a migrated store (`support::postgres()` / `support::sqlite()`). `unmigrated:` hands a
/// store with no migration applied, in `mod postgres_unmigrated` and `mod sqlite_unmigrated`;
/// `worker_threads = n;` sets the test runtime's threads (2 unless given).
#[allow(unused_macros)] // not every test binary runs tests on both backends
macro_rules! backends {
    (unmigrated: $($test:ident),* $(,)?) => {
        $crate::support::backends!(@on postgres_unmigrated, 2, $($test),*);
        $crate::support::backends!(@on sqlite_unmigrated, 2, $($test),*);
    };
    (worker_threads = $threads:literal; $($test:ident),* $(,)?) => {
        $crate::support::backends!(@on postgres, $threads, $($test),*);
        $crate::support::backends!(@on sqlite, $threads, $($test),*);
    };
    (@on $backend:ident, $threads:literal, $($test:ident),*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn $test() {
                    super::$test($crate::support::$backend().await).await;
                }
            )*
        }
    };
    ($($test:ident),* $(,)?) => {
        $crate::support::backends!(worker_threads = 2; $($test),*);
    };
}
#[allow(unused_imports)] // not every test binary runs tests on both backends
pub(crate) use backends;

pub fn postgres_url() -> String {
    std::env::var("LETHE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A store on a real database, and a way to reach around it with raw SQL.
#[derive(Debug, Clone)]
pub enum TestStore {
    Postgres {
        store: Arc<PostgresStore>,
        schema: String,
        url: String,
    },
    Sqlite {
        store: Arc<SqliteStore>,
        path: String,
        _dir: Arc<tempfile::TempDir>,
    },
}

impl TestStore {
    pub fn store(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Postgres { store, .. } => store.clone(),
            Self::Sqlite { store, .. } => store.clone(),
        }
    }

    pub const fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }

    /// A URL that `lethe` accepts for this same database (and schema).
    pub fn database_url(&self) -> String {
        match self {
            Self::Postgres { schema, url, .. } => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}options=-c%20search_path%3D{schema}")
            }
            Self::Sqlite { path, .. } => format!("sqlite://{path}"),
        }
    }

    /// Runs raw SQL against the store's database, around the store: for tampering and probes.
    pub async fn execute(&self, sql: &str) {
        match self {
            Self::Postgres { store, .. } => {
                sqlx::raw_sql(sql).execute(store.pool()).await.unwrap();
            }
            Self::Sqlite { store, .. } => {
                sqlx::raw_sql(sql).execute(store.writer()).await.unwrap();
            }
        }
    }
}

/// A migrated Postgres store in a fresh schema.
pub async fn postgres() -> TestStore {
    let url = postgres_url();
    let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
    let admin = PostgresStore::connect(&url).await.unwrap_or_else(|e| {
        panic!("Postgres at {url} is needed for this test (set LETHE_TEST_POSTGRES_URL): {e}")
    });
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(admin.pool())
        .await
        .unwrap();
    admin.pool().close().await;
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let store = PostgresStore::connect_with(options).await.unwrap();
    store.migrate().await.unwrap();
    TestStore::Postgres {
        store: Arc::new(store),
        schema,
        url,
    }
}

/// A migrated SQLite store in a fresh file.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lethe.db").display().to_string();
    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    TestStore::Sqlite {
        store: Arc::new(store),
        path,
        _dir: Arc::new(dir),
    }
}

/// A Postgres store in a fresh, empty schema: no migration applied yet.
pub async fn postgres_unmigrated() -> TestStore {
    let url = postgres_url();
    let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
    let admin = PostgresStore::connect(&url).await.unwrap_or_else(|e| {
        panic!("Postgres at {url} is needed for this test (set LETHE_TEST_POSTGRES_URL): {e}")
    });
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(admin.pool())
        .await
        .unwrap();
    admin.pool().close().await;
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let store = PostgresStore::connect_with(options).await.unwrap();
    TestStore::Postgres {
        store: Arc::new(store),
        schema,
        url,
    }
}

/// A SQLite store in a fresh file: no migration applied yet.
pub async fn sqlite_unmigrated() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lethe.db").display().to_string();
    let store = SqliteStore::open(&path).await.unwrap();
    TestStore::Sqlite {
        store: Arc::new(store),
        path,
        _dir: Arc::new(dir),
    }
}

impl TestStore {
    /// Runs a query whose rows are one integer column, around the store: for probes.
    pub async fn fetch_integers(&self, sql: &str) -> Vec<i64> {
        match self {
            Self::Postgres { store, .. } => sqlx::query_scalar::<_, i64>(sql)
                .fetch_all(store.pool())
                .await
                .unwrap(),
            Self::Sqlite { store, .. } => sqlx::query_scalar::<_, i64>(sql)
                .fetch_all(store.writer())
                .await
                .unwrap(),
        }
    }

    /// The backend's migrations directory in this repository.
    pub fn migrations_dir(&self) -> std::path::PathBuf {
        let backend = if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(backend)
    }
}

impl TestStore {
    /// The event log and the workflow tables of this database.
    pub fn stores(
        &self,
    ) -> (
        Arc<dyn EventStore>,
        Arc<dyn lethe_engine::workflow::WorkflowStore>,
    ) {
        match self {
            Self::Postgres { store, .. } => (store.clone(), store.clone()),
            Self::Sqlite { store, .. } => (store.clone(), store.clone()),
        }
    }
}

impl TestStore {
    /// All stores of this database, as `lethe serve` holds them.
    pub fn database(&self) -> lethe_engine::root::Database {
        lethe_engine::root::Database::from(match self {
            Self::Postgres { store, .. } => lethe_engine::store::Backend::Postgres(store.clone()),
            Self::Sqlite { store, .. } => lethe_engine::store::Backend::Sqlite(store.clone()),
        })
    }
}

/// Serves `app` on a free port of 127.0.0.1: its base URL (`http://127.0.0.1:<port>`) and the
/// server's task (abort it to stop).
pub async fn serve_router(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, server)
}
