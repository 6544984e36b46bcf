//! `lethe cleaners test`: a dry run of one configured cleaner, changing nothing.

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use super::*;

/// An application's SQLite database with the subject `42` and its neighbour `420`.
async fn app_database(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE users (user_id TEXT, email TEXT); \
         INSERT INTO users VALUES ('42', 'ada@example.com'), ('420', 'bob@example.com'); \
         CREATE TABLE sessions (user_id TEXT); \
         INSERT INTO sessions VALUES ('42'), ('42'), ('420');",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

async fn rows(pool: &SqlitePool) -> (i64, i64) {
    let users = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(pool)
        .await
        .unwrap();
    let sessions = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(pool)
        .await
        .unwrap();
    (users, sessions)
}

#[tokio::test]
async fn a_dry_run_shows_what_a_cleaner_would_erase_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.db");
    let pool = app_database(&app).await;
    std::fs::write(
        dir.path().join("lethe.toml"),
        format!(
            "[[cleaners]]\nname = \"app-db\"\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\
             statements = [\"DELETE FROM sessions WHERE user_id = :user_id\", \
             \"DELETE FROM users WHERE email = :email\"]\n",
            app.display()
        ),
    )
    .unwrap();

    let run_json = run(
        dir.path(),
        &[
            "cleaners",
            "test",
            "app-db",
            "--subject",
            "user_id=42",
            "--json",
        ],
    )
    .await
    .expect(0);
    let found: Value = serde_json::from_str(&run_json.stdout).unwrap();
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{found}");
    assert_eq!(
        items[0]["matched"], 2,
        "the subject's two sessions: {found}"
    );
    assert!(
        items[1]["skipped"].as_str().unwrap().contains("email"),
        "{found}"
    );
    assert_eq!(rows(&pool).await, (2, 3), "a dry run deletes nothing");

    let text = run(
        dir.path(),
        &[
            "cleaners",
            "test",
            "app-db",
            "--subject",
            "user_id=42",
            "--subject",
            "email=ada@example.com",
        ],
    )
    .await
    .expect(0);
    assert!(text.stdout.contains("nothing was changed"), "{text:?}");
    assert!(text.stdout.contains("DELETE FROM users"), "{text:?}");
    assert_eq!(rows(&pool).await, (2, 3), "a dry run deletes nothing");

    let unknown = run(
        dir.path(),
        &["cleaners", "test", "billing", "--subject", "user_id=42"],
    )
    .await
    .expect(1);
    assert!(
        unknown.stderr.contains("no cleaner is named billing"),
        "{unknown:?}"
    );
    let bad = run(
        dir.path(),
        &["cleaners", "test", "app-db", "--subject", "user_id"],
    )
    .await
    .expect(2);
    assert!(bad.stderr.contains("KIND=VALUE"), "{bad:?}");
}
