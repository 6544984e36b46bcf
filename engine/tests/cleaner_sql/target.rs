//! The databases a sql cleaner erases in these tests, one fresh one per test: a Postgres
//! schema, a MariaDB database, a SQLite file; seeded with the subject's rows and neighbours
//! that look like it (ids 42 and 420, hostile ids).

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row as _};

/// The rows of `users` (id, email); each user has two sessions.
pub const USERS: [(&str, &str); 6] = [
    ("42", "subject@example.com"),
    ("420", "neighbour@example.com"),
    ("4", "four@example.com"),
    ("' OR 1=1 --", "hostile@example.com"),
    ("%", "percent@example.com"),
    ("_", "underscore@example.com"),
];

/// The cleaner's statements, the same on every backend.
pub const STATEMENTS: &str = r#"statements = [
  "DELETE FROM sessions WHERE user_id = :user_id",
  "DELETE FROM users WHERE email = :email OR id = :user_id",
]
verify = ["SELECT count(*) FROM users WHERE email = :email OR id = :user_id"]"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
    Sqlite,
}

/// One fresh database and a pool on it from around the cleaner.
pub struct Target {
    pub kind: Kind,
    /// The URL the cleaner is given.
    pub url: String,
    pub admin: AnyPool,
    _dir: Option<tempfile::TempDir>,
}

fn unique() -> String {
    format!("sqlc_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

impl Target {
    pub async fn postgres() -> Self {
        sqlx::any::install_default_drivers();
        let base = std::env::var("LETHE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let schema = unique();
        let admin = pool(&base).await;
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        Self::seeded(Kind::Postgres, url, None).await
    }

    /// `None`, said loudly, when `LETHE_TEST_MARIADB_URL` is unset (scripts/test.sh and CI
    /// always set it).
    pub async fn mariadb() -> Option<Self> {
        sqlx::any::install_default_drivers();
        let Ok(base) = std::env::var("LETHE_TEST_MARIADB_URL") else {
            eprintln!(
                "\n*** SKIPPED: LETHE_TEST_MARIADB_URL is unset, so the MariaDB half of this \
                 test did not run (scripts/services/mariadb.sh prints one) ***\n"
            );
            return None;
        };
        let base = base.trim_end_matches('/').to_owned();
        let database = unique();
        let admin = pool(&base).await;
        sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = format!("{base}/{database}");
        Some(Self::seeded(Kind::MariaDb, url, None).await)
    }

    pub async fn sqlite() -> Self {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let admin = pool(&format!("sqlite://{}?mode=rwc", path.display())).await;
        admin.close().await;
        let url = format!("sqlite://{}", path.display());
        Self::seeded(Kind::Sqlite, url, Some(dir)).await
    }

    async fn seeded(kind: Kind, url: String, dir: Option<tempfile::TempDir>) -> Self {
        let admin = pool(&url).await;
        let target = Self {
            kind,
            url,
            admin,
            _dir: dir,
        };
        target
            .run("CREATE TABLE users (id VARCHAR(64) NOT NULL, email VARCHAR(200) NOT NULL)")
            .await;
        target
            .run("CREATE TABLE sessions (user_id VARCHAR(64) NOT NULL, token VARCHAR(64) NOT NULL)")
            .await;
        for (id, email) in USERS {
            target.insert_user(id, email).await;
        }
        target
    }

    pub async fn insert_user(&self, id: &str, email: &str) {
        sqlx::query(&self.placeholders("INSERT INTO users (id, email) VALUES (?, ?)"))
            .bind(id)
            .bind(email)
            .execute(&self.admin)
            .await
            .unwrap();
        for n in 0..2 {
            sqlx::query(&self.placeholders("INSERT INTO sessions (user_id, token) VALUES (?, ?)"))
                .bind(id)
                .bind(format!("t{n}"))
                .execute(&self.admin)
                .await
                .unwrap();
        }
    }

    /// Users with these ids (plain ASCII, written into the text) and the email `<id>@example.com`,
    /// two sessions each, a few hundred rows to a statement.
    pub async fn insert_many(&self, ids: &[String]) {
        for chunk in ids.chunks(250) {
            let users: Vec<String> = chunk
                .iter()
                .map(|id| format!("('{id}', '{id}@example.com')"))
                .collect();
            let sessions: Vec<String> = chunk
                .iter()
                .flat_map(|id| [format!("('{id}', 't0')"), format!("('{id}', 't1')")])
                .collect();
            self.run(&format!(
                "INSERT INTO users (id, email) VALUES {}",
                users.join(", ")
            ))
            .await;
            self.run(&format!(
                "INSERT INTO sessions (user_id, token) VALUES {}",
                sessions.join(", ")
            ))
            .await;
        }
    }

    fn placeholders(&self, sql: &str) -> String {
        if self.kind != Kind::Postgres {
            return sql.to_owned();
        }
        let mut n = 0;
        sql.chars()
            .map(|c| {
                if c == '?' {
                    n += 1;
                    format!("${n}")
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    pub async fn run(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(&self.admin).await.unwrap();
    }

    /// The ids in `users`, and how many sessions each has, sorted.
    pub async fn rows(&self) -> Vec<(String, i64)> {
        let rows = sqlx::query(
            "SELECT u.id, (SELECT count(*) FROM sessions s WHERE s.user_id = u.id) FROM users u",
        )
        .fetch_all(&self.admin)
        .await
        .unwrap();
        let mut rows: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect();
        rows.sort();
        rows
    }

    pub async fn sessions(&self) -> i64 {
        sqlx::query("SELECT count(*) FROM sessions")
            .fetch_one(&self.admin)
            .await
            .unwrap()
            .get::<i64, _>(0)
    }
}

/// The seeded rows without those of `ids`.
pub fn seeded_without(ids: &[&str]) -> Vec<(String, i64)> {
    let mut rows: Vec<(String, i64)> = USERS
        .iter()
        .filter(|(id, _)| !ids.contains(id))
        .map(|(id, _)| ((*id).to_owned(), 2))
        .collect();
    rows.sort();
    rows
}

async fn pool(url: &str) -> AnyPool {
    AnyPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("the test database is not reachable: {e}"))
}
