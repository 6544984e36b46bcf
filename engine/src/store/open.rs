//! Opening the database a URL names: the connection pool of one backend, and its migrations.
//! The backend's store is the event log and the key store; the layers above build their own
//! stores on the same pool (the composition root bundles them).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::keys::KeyStore;
use super::{EventStore, PostgresStore, SqliteStore, StoreError};

/// An opened database: the store of one backend, shared by everything that uses it.
#[derive(Debug, Clone)]
pub enum Backend {
    Postgres(Arc<PostgresStore>),
    Sqlite(Arc<SqliteStore>),
}

impl Backend {
    /// Opens the database a URL names: `postgres://...` or `sqlite://...` (the file and its
    /// parent directory are created when missing). Every call waits at most `acquire_timeout`
    /// for a Postgres connection before it fails with [`StoreError::Unavailable`]. SQLite is a
    /// local file: its calls wait for the one writing connection, and for another process's
    /// lock up to its busy timeout.
    pub async fn open(url: &str, acquire_timeout: Duration) -> Result<Self, OpenError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options =
                sqlx::postgres::PgConnectOptions::from_str(url).map_err(StoreError::from)?;
            let store = PostgresStore::connect_with_timeout(options, acquire_timeout).await?;
            Ok(Self::Postgres(Arc::new(store)))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Self::Sqlite(Arc::new(SqliteStore::open(path).await?)))
        } else {
            Err(OpenError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// Applies pending migrations; a no-op when up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(store) => store.migrate().await,
            Self::Sqlite(store) => store.migrate().await,
        }
    }

    /// The event log.
    pub fn events(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Postgres(store) => store.clone(),
            Self::Sqlite(store) => store.clone(),
        }
    }

    /// The data keys, blind indexes and the master key ring.
    pub fn keys(&self) -> Arc<dyn KeyStore> {
        match self {
            Self::Postgres(store) => store.clone(),
            Self::Sqlite(store) => store.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database URL {0:?} is neither postgres://... nor sqlite://...")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the database directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
}
