//! Which database errors are an outage: SQLSTATEs from a real server, and a locked SQLite file.

use super::*;

/// Raises `sqlstate` on a real Postgres connection and classifies the error.
async fn postgres_error(url: &str, sqlstate: &str) -> StoreError {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{sqlstate}'; END $$");
    let error = sqlx::raw_sql(&sql)
        .execute(&mut connection)
        .await
        .unwrap_err();
    StoreError::from(error)
}

#[tokio::test]
async fn outage_sqlstates_from_a_real_server_are_unavailable_and_others_are_not() {
    let url = support::postgres_url();
    for code in ["08006", "08001", "57P01", "57P02", "57P03", "53300"] {
        let error = postgres_error(&url, code).await;
        assert!(error.is_unavailable(), "{code}: {error:?}");
    }
    for code in ["23505", "22P02", "P0001"] {
        let error = postgres_error(&url, code).await;
        assert!(!error.is_unavailable(), "{code}: {error:?}");
    }
    // Lethe's own backend terminated under it: the error a request in flight gets.
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    let error = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut connection)
        .await
        .unwrap_err();
    let error = StoreError::from(error);
    assert!(error.is_unavailable(), "{error:?}");
}

#[tokio::test]
async fn sqlite_locked_by_another_connection_is_unavailable() {
    use sqlx::sqlite::SqliteConnectOptions;
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("locked.db"))
        .create_if_missing(true)
        .busy_timeout(Duration::ZERO);
    let mut holder = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut other = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let error = sqlx::raw_sql("INSERT INTO t VALUES (2)")
        .execute(&mut other)
        .await
        .unwrap_err();
    let error = StoreError::from(error);
    assert!(error.is_unavailable(), "{error:?}");
    // A real mistake is not an outage.
    let error = StoreError::from(
        sqlx::raw_sql("INSERT INTO missing VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap_err(),
    );
    assert!(!error.is_unavailable(), "{error:?}");
}
