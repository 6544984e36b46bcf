//! `keys_from`: the objects named in the application's rows, in the shapes an application's
//! schema takes over the years: a JSON document with the URL at `imageUrl`; a later one with
//! `inputImageUrl` and a list of keys at `inputFileList[*].key`; plain `key` and `url`
//! columns. A URL of another bucket is skipped, never deleted.

use super::*;

const PATHS: &str = r#"["$.imageUrl", "$.inputImageUrl", "$.url", "$.inputFileList[*].key"]"#;

/// The rows of subject 42 and of a neighbour, 43, whose objects stay.
fn documents(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "42",
            r#"{"imageUrl": "s3://user-uploads/img/a.png"}"#.to_owned(),
        ),
        (
            "42",
            format!(
                r#"{{"inputImageUrl": "{endpoint}/user-uploads/in/b%20c.png",
                    "inputFileList": [{{"key": "files/c.txt"}}, {{"key": "files/d.txt"}}],
                    "url": "https://other-bucket.s3.eu-west-1.amazonaws.com/img/a.png"}}"#
            ),
        ),
        (
            "43",
            r#"{"imageUrl": "s3://user-uploads/img/z.png"}"#.to_owned(),
        ),
    ]
}

const FILES: &[(&str, &str, &str)] = &[
    (
        "42",
        "plain/e.bin",
        "https://user-uploads.s3.us-east-1.amazonaws.com/plain/f.bin",
    ),
    ("43", "plain/y.bin", "s3://user-uploads/plain/x.bin"),
];

const SEEDED: &[&str] = &[
    "img/a.png",
    "in/b c.png",
    "files/c.txt",
    "files/d.txt",
    "plain/e.bin",
    "plain/f.bin",
    "img/z.png",
    "plain/x.bin",
    "plain/y.bin",
];

async fn seed_objects(fx: &Fixture) {
    fx.put(BUCKET, SEEDED).await;
    fx.create_bucket("other-bucket").await;
    fx.put("other-bucket", &["img/a.png"]).await;
}

async fn check(fx: &Fixture, settings: &str) {
    let cleaner = fx.cleaner(BUCKET, settings);
    let dry = {
        use lethe_engine::cleaners::Cleaner as _;
        cleaner
            .dry_run(&subject(&[("user_id", "42")]))
            .await
            .unwrap()
    };
    assert_eq!(dry.items[0].matched, Some(6), "{dry:?}");
    assert_eq!(fx.keys(BUCKET).await, set(SEEDED));

    let outcome = attempt(&cleaner, &subject(&[("user_id", "42")])).await;
    assert_eq!(deleted(&outcome), 6, "{outcome:?}");
    let Outcome::Succeeded { detail, .. } = &outcome else {
        unreachable!()
    };
    assert_eq!(
        detail.as_deref(),
        Some("keys_from: 1 URL(s) of another bucket or host skipped")
    );
    assert_eq!(
        fx.keys(BUCKET).await,
        set(&["img/z.png", "plain/x.bin", "plain/y.bin"])
    );
    assert_eq!(fx.keys("other-bucket").await, set(&["img/a.png"]));

    let again = attempt(&cleaner, &subject(&[("user_id", "42")])).await;
    assert_eq!(deleted(&again), 0, "{again:?}");
    let lacking = attempt(&cleaner, &subject(&[("email", "a@b.c")])).await;
    assert_eq!(deleted(&lacking), 0, "{lacking:?}");
}

/// The application's rows in a SQLite file: subject 42's and 43's documents and files.
/// Returns the file's path and the cleaner's `keys_from` setting reading it.
async fn sqlite_rows(fx: &Fixture) -> (std::path::PathBuf, String) {
    let path = fx.dir.path().join("app.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE requests (user_id TEXT, doc TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE files (user_id TEXT, key TEXT, url TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    for (user, doc) in documents(&fx.moto.endpoint()) {
        sqlx::query("INSERT INTO requests VALUES (?, ?)")
            .bind(user)
            .bind(doc)
            .execute(&pool)
            .await
            .unwrap();
    }
    for (user, key, url) in FILES {
        sqlx::query("INSERT INTO files VALUES (?, ?, ?)")
            .bind(user)
            .bind(key)
            .bind(url)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let query = "SELECT doc, NULL AS key, NULL AS url FROM requests WHERE user_id = :user_id \
                 UNION ALL SELECT NULL, key, url FROM files WHERE user_id = :user_id";
    let settings = format!(
        "keys_from = {{ url = \"sqlite://{}\", query = \"{query}\", paths = {PATHS} }}",
        path.display()
    );
    (path, settings)
}

#[tokio::test]
async fn keys_named_in_sqlite_rows_are_deleted_in_every_shape() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    seed_objects(&fx).await;
    let (_, settings) = sqlite_rows(&fx).await;
    check(&fx, &settings).await;
}

/// The ISMS-P case in a running engine: the objects named in the rows go first, then a sql
/// cleaner with `after = ["uploads"]` deletes the rows; everything of 42 is gone, 43's kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rows_go_only_after_the_objects_they_name() {
    use crate::support::config::{Cleaner, TestConfig};
    use lethe_domain::RequestStatus;

    let Some(fx) = Fixture::start().await else {
        return;
    };
    seed_objects(&fx).await;
    let (path, keys_from) = sqlite_rows(&fx).await;
    let uploads = Cleaner::raw("uploads", "object_store", &fx.lines(BUCKET, &keys_from));
    let rows = Cleaner::raw(
        "rows",
        "sql",
        &format!(
            "url = \"sqlite://{}\"\nstatements = [\"DELETE FROM requests WHERE user_id = :user_id\", \
             \"DELETE FROM files WHERE user_id = :user_id\"]",
            path.display()
        ),
    )
    .after(&["uploads"]);
    let config = TestConfig::new()
        .no_reminders()
        .poll_interval("50ms")
        .cleaner(rows)
        .cleaner(uploads);
    let store = support::sqlite().await;
    let engine = support::engine::TestEngine::spawn(&store, config).await;
    let id = engine.submit_due(&[("user_id", "42")]).await;
    let events = engine
        .wait_for(
            id,
            RequestStatus::Completed,
            std::time::Duration::from_secs(60),
        )
        .await
        .events;
    let deleted = |cleaner: &str| {
        events
            .iter()
            .find(|e| e.event_type == "CleanerSucceeded" && e.payload["cleaner"] == cleaner)
            .map(|e| e.payload["deleted"].clone())
            .unwrap_or_else(|| panic!("{cleaner} did not succeed"))
    };
    assert_eq!(deleted("uploads")["objects"], 6);
    assert_eq!(deleted("rows")["rows"], 3);
    assert_eq!(
        fx.keys(BUCKET).await,
        set(&["img/z.png", "plain/x.bin", "plain/y.bin"])
    );
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let users: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM requests UNION ALL SELECT user_id FROM files")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(users, ["43", "43"], "only the neighbour's rows are left");
    engine.stop().await;
}

#[tokio::test]
async fn keys_named_in_postgres_jsonb_rows_are_deleted_in_every_shape() {
    let Ok(base) = std::env::var("LETHE_TEST_POSTGRES_URL") else {
        eprintln!("\n*** SKIPPED: LETHE_TEST_POSTGRES_URL is not set ***\n");
        return;
    };
    let Some(fx) = Fixture::start().await else {
        return;
    };
    seed_objects(&fx).await;
    let pool = sqlx::PgPool::connect(&base).await.unwrap();
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let (requests, files) = (format!("requests_{suffix}"), format!("files_{suffix}"));
    for ddl in [
        format!("CREATE TABLE {requests} (user_id TEXT, doc JSONB)"),
        format!("CREATE TABLE {files} (user_id TEXT, key TEXT, url TEXT)"),
    ] {
        sqlx::query(&ddl).execute(&pool).await.unwrap();
    }
    for (user, doc) in documents(&fx.moto.endpoint()) {
        sqlx::query(&format!("INSERT INTO {requests} VALUES ($1, $2::jsonb)"))
            .bind(user)
            .bind(doc)
            .execute(&pool)
            .await
            .unwrap();
    }
    for (user, key, url) in FILES {
        sqlx::query(&format!("INSERT INTO {files} VALUES ($1, $2, $3)"))
            .bind(user)
            .bind(key)
            .bind(url)
            .execute(&pool)
            .await
            .unwrap();
    }
    let query = format!(
        "SELECT doc, NULL::text AS key, NULL::text AS url FROM {requests} WHERE user_id = :user_id \
         UNION ALL SELECT NULL::jsonb, key, url FROM {files} WHERE user_id = :user_id"
    );
    let settings =
        format!("keys_from = {{ url = \"{base}\", query = \"{query}\", paths = {PATHS} }}");
    check(&fx, &settings).await;
    for table in [requests, files] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await
            .unwrap();
    }
}
