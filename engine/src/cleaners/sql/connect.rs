//! A pool on one of the three backends (Postgres, MySQL/MariaDB, SQLite) through `sqlx::Any`,
//! and running [`NamedQuery`]s on it with the subject's identifiers bound as text.
//!
//! The pool connects lazily: a database that is down when Lethe starts makes attempts fail
//! (retryably), not `serve`. Errors are [`SqlError`]s, classified: what another attempt may
//! mend (the server unreachable, shutting down, out of connections, a deadlock) is
//! retryable, a statement the server refuses is not. Their text may quote the subject, so it
//! is only given out redacted ([`SqlError::describe`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions as _, Row as _, Transaction};

use super::params::{Backend, NamedQuery};
use crate::cleaners::redact::redact;

/// A database of one of the three backends, reached through a bounded pool.
#[derive(Debug, Clone)]
pub struct SqlDatabase {
    pool: AnyPool,
    backend: Backend,
}

/// How to reach a database: its URL (without a password), the password kept apart, the
/// pool's bound and how long an attempt waits for a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings<'a> {
    pub url: &'a str,
    pub password: Option<&'a str>,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl SqlDatabase {
    /// Prepares the pool without connecting. The error names what is wrong with the URL,
    /// never the password.
    pub fn connect_lazy(settings: ConnectSettings<'_>) -> Result<Self, String> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(settings.url)
            .ok_or_else(|| format!("the URL's scheme is not one of {}", Backend::SCHEMES))?;
        let mut url = url::Url::parse(settings.url).map_err(|e| format!("not a URL: {e}"))?;
        if let Some(password) = settings.password {
            url.set_password(Some(password))
                .map_err(|()| format!("a {backend} URL of this form cannot carry a password"))?;
        }
        let options = AnyConnectOptions::from_url(&url).map_err(|e| {
            format!(
                "not a {backend} URL: {}",
                without(&e.to_string(), settings.password)
            )
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction; nested ones (`Acquire::begin` on it) are savepoints.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, SqlError> {
        self.pool.begin().await.map_err(SqlError::from)
    }

    /// The first column of every row `query` returns, as text, with `values` bound.
    pub async fn fetch_strings(
        &self,
        query: &NamedQuery,
        values: &[&str],
    ) -> Result<Vec<String>, SqlError> {
        let rows = bind(query, values).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(SqlError::from))
            .collect()
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Runs `query` with `values` bound on `tx`: the number of rows it affected.
pub async fn execute(
    tx: &mut Transaction<'_, Any>,
    query: &NamedQuery,
    values: &[&str],
) -> Result<u64, SqlError> {
    let done = bind(query, values).execute(&mut **tx).await?;
    Ok(done.rows_affected())
}

/// Runs `query` (a `SELECT count(*)`) with `values` bound on `tx`: the number in the first
/// column of its first row (0 for no row).
pub async fn count(
    tx: &mut Transaction<'_, Any>,
    query: &NamedQuery,
    values: &[&str],
) -> Result<i64, SqlError> {
    let row = bind(query, values).fetch_optional(&mut **tx).await?;
    match row {
        None => Ok(0),
        Some(row) => row.try_get::<i64, _>(0).map_err(SqlError::from),
    }
}

fn bind<'q>(
    query: &'q NamedQuery,
    values: &[&'q str],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    values
        .iter()
        .fold(sqlx::query(query.sql()), |q, value| q.bind(*value))
}

/// A failure from the database, classified.
#[derive(Debug)]
pub struct SqlError {
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// The SQLSTATE or the backend's error code, when the server answered.
    pub code: Option<String>,
    /// The error's text as the server or the driver wrote it: it may quote the subject.
    text: String,
}

impl SqlError {
    /// The error for the log: its code and text, with the subject's identifiers redacted.
    pub fn describe(&self, subject: &BTreeMap<String, String>) -> String {
        let text = redact(&self.text, subject);
        match &self.code {
            Some(code) => format!("error {code}: {text}"),
            None => text,
        }
    }
}

impl From<sqlx::Error> for SqlError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) => {
                let code = database_code(db.as_ref());
                Self {
                    retryable: retryable_database_error(db.as_ref()),
                    code: Some(code.into_owned()),
                    text: db.message().to_owned(),
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => Self {
                retryable: true,
                code: None,
                text: error.to_string(),
            },
            _ => Self {
                retryable: false,
                code: None,
                text: error.to_string(),
            },
        }
    }
}

/// MySQL's error number with its SQLSTATE, the SQLSTATE on Postgres, the extended result
/// code on SQLite.
fn database_code(db: &dyn sqlx::error::DatabaseError) -> Cow<'_, str> {
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return match mysql.code() {
            Some(state) => format!("{} ({state})", mysql.number()).into(),
            None => mysql.number().to_string().into(),
        };
    }
    db.code().unwrap_or(Cow::Borrowed("unknown"))
}

/// Whether a server's error is about the connection or the moment (another attempt may
/// succeed), not about the statement.
fn retryable_database_error(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // Too many connections (1040, 1203, 1226), shutting down (1053), lock wait and
        // deadlock (1205, 1213), network trouble (1158-1161), killed or idle (1927, 4031).
        return matches!(
            mysql.number(),
            1040 | 1053 | 1158..=1161 | 1203 | 1205 | 1213 | 1226 | 1927 | 4031
        );
    }
    if let Some(sqlite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        // BUSY (5), LOCKED (6), IOERR (10), CANTOPEN (14), by the primary result code.
        let primary = sqlx::error::DatabaseError::code(sqlite)
            .and_then(|c| c.parse::<i64>().ok())
            .map(|c| c & 0xff);
        return matches!(primary, Some(5 | 6 | 10 | 14));
    }
    // Postgres: connection exceptions (08), insufficient resources such as too many
    // connections (53), operator intervention such as a shutdown (57P01-57P03) or a cancelled
    // statement (57014), serialization failure and deadlock (40001, 40P01).
    let state = db.code().unwrap_or_default();
    state.starts_with("08")
        || state.starts_with("53")
        || matches!(
            &*state,
            "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01"
        )
}

/// `text` without `secret`, should a driver quote it.
fn without(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "[password]"),
        _ => text.to_owned(),
    }
}
