//! The database `keys_from` reads: a small lazy pool on Postgres, MySQL/MariaDB or SQLite,
//! a query whose named parameters (`:user_id`) the sql cleaner's converter turned into the
//! backend's placeholders, bound as text, and each row's cells read as text or JSON, whatever
//! the column's type. (The sql cleaner's `Any` pool cannot decode JSON columns, hence typed
//! pools here.)

use std::str::FromStr as _;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row as _;

use crate::cleaners::sql::params::Backend;

/// One cell of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Json(serde_json::Value),
}

/// A failed query, described without the values it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFailure {
    pub message: String,
    pub retryable: bool,
}

#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// How many connections one cleaner opens to the database.
const CONNECTIONS: u32 = 2;

impl Database {
    /// A pool that connects when first used; the error names what is wrong, not the URL (it
    /// may hold a password).
    pub fn connect_lazy(url: &str, password: Option<&str>) -> Result<Self, String> {
        let scheme = url.split(':').next().unwrap_or_default();
        let bad = |e: sqlx::Error| format!("is not a database URL Lethe can use ({})", kind(&e));
        Ok(match scheme {
            "postgres" | "postgresql" => {
                let mut options = PgConnectOptions::from_str(url).map_err(bad)?;
                if let Some(password) = password {
                    options = options.password(password);
                }
                Self::Postgres(
                    PgPoolOptions::new()
                        .max_connections(CONNECTIONS)
                        .connect_lazy_with(options),
                )
            }
            "mysql" | "mariadb" => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                let mut options = MySqlConnectOptions::from_str(&url).map_err(bad)?;
                if let Some(password) = password {
                    options = options.password(password);
                }
                Self::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(CONNECTIONS)
                        .connect_lazy_with(options),
                )
            }
            "sqlite" => Self::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(CONNECTIONS)
                    .connect_lazy_with(SqliteConnectOptions::from_str(url).map_err(bad)?),
            ),
            _ => return Err("must be a postgres://, mysql:// or sqlite:// URL".to_owned()),
        })
    }

    /// The dialect its queries are written in.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::MySql(_) => Backend::MySql,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The cells of every row of `sql` (already positional), with `values` bound in order.
    pub async fn rows(&self, sql: &str, values: &[&str]) -> Result<Vec<Vec<Cell>>, QueryFailure> {
        macro_rules! run {
            ($pool:expr) => {{
                let mut query = sqlx::query(sql);
                for value in values {
                    query = query.bind(*value);
                }
                let rows = query.fetch_all($pool).await.map_err(failure)?;
                rows.iter()
                    .map(|row| {
                        (0..row.columns().len())
                            .filter_map(|i| {
                                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                                    return Some(Cell::Text(text));
                                }
                                row.try_get::<Option<serde_json::Value>, _>(i)
                                    .ok()
                                    .flatten()
                                    .map(Cell::Json)
                            })
                            .collect()
                    })
                    .collect()
            }};
        }
        Ok(match self {
            Self::Postgres(pool) => run!(pool),
            Self::MySql(pool) => run!(pool),
            Self::Sqlite(pool) => run!(pool),
        })
    }
}

fn failure(error: sqlx::Error) -> QueryFailure {
    let retryable = !matches!(
        error,
        sqlx::Error::Database(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::TypeNotFound { .. }
    );
    QueryFailure {
        message: format!("keys_from: the query failed ({})", kind(&error)),
        retryable,
    }
}

/// What kind of error `error` is, without its text (a database's message may quote values).
fn kind(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(e) => match e.code() {
            Some(code) => format!("database error {code}"),
            None => "database error".to_owned(),
        },
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => "the database could not be reached".to_owned(),
        sqlx::Error::PoolTimedOut => "no connection to the database in time".to_owned(),
        sqlx::Error::Configuration(_) => "bad settings".to_owned(),
        _ => "unexpected answer".to_owned(),
    }
}
