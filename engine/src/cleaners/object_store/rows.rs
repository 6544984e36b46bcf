//! The database `keys_from` reads: a small lazy pool on Postgres, MySQL/MariaDB or SQLite,
//! a query with named parameters (`:user_id`) bound as text, and each row's cells read as text
//! or JSON, whatever the column's type.

use std::str::FromStr as _;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row as _;

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

    /// `query` with its named parameters turned into this database's placeholders.
    pub fn positional(&self, query: &str) -> (String, Vec<String>) {
        let numbered = matches!(self, Self::Postgres(_));
        positional(query, numbered)
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

/// `query` with each `:name` (outside quotes, not a `::` cast) replaced by `$1`, `$2`… or `?`,
/// and the names in order.
fn positional(query: &str, numbered: bool) -> (String, Vec<String>) {
    let mut out = String::with_capacity(query.len());
    let mut names = Vec::new();
    let mut quote: Option<char> = None;
    let mut chars = query.char_indices().peekable();
    let mut previous = ' ';
    while let Some((_, c)) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' || c == '`' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == ':'
                && previous != ':'
                && chars.peek().is_some_and(|(_, n)| n.is_ascii_lowercase()) =>
            {
                let mut name = String::new();
                while let Some((_, n)) = chars.peek() {
                    if n.is_ascii_lowercase() || n.is_ascii_digit() || *n == '_' {
                        name.push(*n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                names.push(name);
                if numbered {
                    out.push_str(&format!("${}", names.len()));
                } else {
                    out.push('?');
                }
            }
            None => out.push(c),
        }
        previous = c;
    }
    (out, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_become_positional_outside_quotes_and_casts() {
        let query = "SELECT doc::text FROM t WHERE a = :user_id AND b = ':no' AND c = :email";
        assert_eq!(
            positional(query, true),
            (
                "SELECT doc::text FROM t WHERE a = $1 AND b = ':no' AND c = $2".to_owned(),
                vec!["user_id".to_owned(), "email".to_owned()]
            )
        );
        assert_eq!(
            positional("x = :user_id OR y = :user_id", false).0,
            "x = ? OR y = ?"
        );
    }
}
