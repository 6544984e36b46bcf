//! SQLite's migrations on Postgres' numbers (ADR 23). Until then SQLite numbered its own
//! (`events_fewer_checks` was 6, `key_ring` 7), and sqlx knows an applied migration by its
//! number and checksum. Covered: a database migrated under the old numbers, with a log written
//! by `lethe`, opens, is renumbered and upgraded, and keeps every event (positions, hashes,
//! sealed subjects); one migrated only part of the way upgrades too; and the migrations that do
//! nothing on SQLite leave the schema exactly as the old numbering built it.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::SqlitePool;
use tokio::time::timeout;

/// SQLite's migrations as numbered before ADR 23: (the old file name, today's file name).
/// The files kept their contents, so an old database holds today's checksums.
const OLD_NUMBERS: [(&str, &str); 7] = [
    ("0001_event_log.sql", "0001_event_log.sql"),
    ("0002_workflow.sql", "0002_workflow.sql"),
    ("0003_read_models.sql", "0003_read_models.sql"),
    ("0004_subject_keys.sql", "0004_subject_keys.sql"),
    ("0005_jobs_by_kind.sql", "0005_jobs_by_kind.sql"),
    (
        "0006_events_fewer_checks.sql",
        "0007_events_fewer_checks.sql",
    ),
    ("0007_key_ring.sql", "0009_key_ring.sql"),
];

/// The last of today's migrations that the old numbering had an equivalent of.
const LAST_OLD_EQUIVALENT: i64 = 9;

/// How long one `lethe` command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

fn sqlite_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite")
}

/// A directory holding the first `count` SQLite migrations under their old numbers.
fn old_migrations(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (old, today) in &OLD_NUMBERS[..count] {
        std::fs::copy(sqlite_migrations().join(today), dir.path().join(old)).unwrap();
    }
    dir
}

/// A directory holding today's SQLite migrations up to `last` (inclusive).
fn migrations_up_to(last: i64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(sqlite_migrations()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let version: i64 = name[..4].parse().unwrap();
        if version <= last {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    dir
}

async fn pool(path: &Path) -> SqlitePool {
    SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap()
}

/// A database file at `path` migrated by the migrations in `dir`.
async fn migrated_with(dir: &Path, path: &Path) -> SqlitePool {
    let pool = pool(path).await;
    Migrator::new(dir).await.unwrap().run(&pool).await.unwrap();
    pool
}

/// `(version, checksum)` of every migration a database records as applied.
async fn applied(pool: &SqlitePool) -> Vec<(i64, Vec<u8>)> {
    sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// `(version, checksum)` of every SQLite migration of this version of Lethe.
async fn todays_migrations() -> Vec<(i64, Vec<u8>)> {
    Migrator::new(sqlite_migrations())
        .await
        .unwrap()
        .iter()
        .map(|m| (m.version, m.checksum.to_vec()))
        .collect()
}

/// Every table and index of a database but sqlx's and SQLite's own, with its SQL.
async fn schema(pool: &SqlitePool) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT type, name, sql FROM sqlite_master \
         WHERE name NOT LIKE '\\_sqlx%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         ORDER BY type, name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Runs `lethe` in `dir` and returns its stdout; panics unless it exits 0.
async fn lethe(dir: &Path, args: &[&str]) -> String {
    let output = timeout(
        COMMAND_DEADLINE,
        support::binary::lethe(dir).args(args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("lethe {args:?} did not finish"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "lethe {args:?}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The log's tables, copied row for row.
const LOG_TABLES: [&str; 6] = [
    "streams",
    "events",
    "commands",
    "request_keys",
    "subject_index",
    "master_keys",
];

async fn log_rows(pool: &SqlitePool) -> Vec<(i64, String, String, String)> {
    sqlx::query_as("SELECT position, stream_id, payload, hash FROM events ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_database_migrated_under_the_old_numbers_upgrades_and_keeps_its_log() {
    // A log written by `lethe` itself: two submissions, sealed subjects, hash chains.
    let source_dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for user in ["1", "2"] {
        let subject = format!("user_id={user}");
        let out = lethe(source_dir.path(), &["submit", "--subject", &subject]).await;
        ids.push(out.split_whitespace().next().unwrap().to_owned());
    }
    let source = source_dir.path().join("lethe-data/lethe.db");

    // The database as the old numbering built it, holding that log.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        source_dir.path().join("test-master.key"),
        dir.path().join("test-master.key"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("lethe-data")).unwrap();
    let path = dir.path().join("lethe-data/lethe.db");
    let old = old_migrations(OLD_NUMBERS.len());
    let db = migrated_with(old.path(), &path).await;
    let mut copy = db.acquire().await.unwrap();
    sqlx::query(&format!("ATTACH DATABASE '{}' AS source", source.display()))
        .execute(&mut *copy)
        .await
        .unwrap();
    for table in LOG_TABLES {
        sqlx::query(&format!(
            "INSERT INTO main.{table} SELECT * FROM source.{table}"
        ))
        .execute(&mut *copy)
        .await
        .unwrap();
    }
    sqlx::query("DETACH DATABASE source")
        .execute(&mut *copy)
        .await
        .unwrap();
    drop(copy);
    let versions: Vec<i64> = applied(&db).await.into_iter().map(|(v, _)| v).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7], "the old numbering");
    let before = log_rows(&db).await;
    assert_eq!(before.len(), 2);
    db.close().await;

    let migrated = lethe(dir.path(), &["migrate"]).await;
    assert!(migrated.contains("up to date"), "{migrated}");
    // A second run finds nothing to renumber and nothing to apply.
    lethe(dir.path(), &["migrate"]).await;

    let db = pool(&path).await;
    assert_eq!(
        applied(&db).await,
        todays_migrations().await,
        "every migration recorded under today's number with its checksum"
    );
    assert_eq!(log_rows(&db).await, before, "every event kept as it was");
    db.close().await;

    let verified = lethe(dir.path(), &["verify"]).await;
    assert!(verified.contains("ok: 2 requests, 2 events"), "{verified}");
    let history: Value =
        serde_json::from_str(&lethe(dir.path(), &["history", &ids[0], "--json"]).await).unwrap();
    assert_eq!(history["verified"], Value::Bool(true), "{history}");
    assert!(
        history.to_string().contains("\"user_id\":\"1\""),
        "the subject still opens under the master key: {history}"
    );
    let submitted = lethe(dir.path(), &["submit", "--subject", "user_id=3"]).await;
    assert!(submitted.contains("submitted"), "{submitted}");
}

#[tokio::test]
async fn a_database_migrated_part_of_the_way_under_the_old_numbers_upgrades() {
    // Old 1-6: up to `events_fewer_checks`, before the key ring.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lethe-data")).unwrap();
    let path = dir.path().join("lethe-data/lethe.db");
    let old = old_migrations(6);
    migrated_with(old.path(), &path).await.close().await;

    lethe(dir.path(), &["migrate"]).await;

    let db = pool(&path).await;
    assert_eq!(applied(&db).await, todays_migrations().await);
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'master_keys'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(tables, ["master_keys"], "the key ring's migration ran");
}

#[tokio::test]
async fn the_migrations_that_do_nothing_on_sqlite_leave_the_schema_as_the_old_numbering_built_it() {
    let files = tempfile::tempdir().unwrap();
    let old = old_migrations(OLD_NUMBERS.len());
    let old_db = migrated_with(old.path(), &files.path().join("old.db")).await;
    let today = migrations_up_to(LAST_OLD_EQUIVALENT);
    let new_db = migrated_with(today.path(), &files.path().join("new.db")).await;
    let old_schema = schema(&old_db).await;
    assert!(old_schema.iter().any(|(_, name, _)| name == "events"));
    assert_eq!(schema(&new_db).await, old_schema);
}
