//! The `lifecycle-sql` scenario: `lifecycle` with Lethe erasing a Postgres database itself, by
//! two built-in `sql` cleaners (`sessions`, then `users` after it), once with one call per
//! request and once with batches, each over requests already due when the workflow starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use lethe_engine::config::Config;
use lethe_engine::root::Runtime;
use lethe_engine::store::master_key::MasterKey;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::db::Db;
use crate::load::per_second;
use crate::services::{http_client, start_api, submit_many, MASTER_KEY};
use crate::{Checks, Settings};

use super::lifecycle::wait_for_completed;
use super::{run_tag, SUBMIT_CONCURRENCY};

/// Sessions seeded per subject (each subject also has one `users` row).
const SESSIONS_PER_SUBJECT: i64 = 3;

/// Runs the scenario without and with batches; the store erased is a schema of its own in
/// `--postgres-url`'s database, dropped at the end.
pub async fn lifecycle_sql(
    db: &Db,
    settings: &Settings,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let schema = format!("lethe_bench_app_{}", run_tag());
    let store = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(crate::db::connect_options(&settings.postgres_url)?)
        .await?;
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA {schema}; \
         CREATE TABLE {schema}.users (user_id text PRIMARY KEY, email text NOT NULL); \
         CREATE TABLE {schema}.sessions (user_id text NOT NULL, n int NOT NULL); \
         CREATE INDEX ON {schema}.sessions (user_id)"
    ))
    .execute(&store)
    .await?;
    let mut result = Ok(());
    for batch in [None, Some(500)] {
        result = run(db, settings, checks, &store, &schema, batch).await;
        if result.is_err() {
            break;
        }
    }
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&store)
        .await?;
    store.close().await;
    result
}

/// One run: seeds the subjects' rows, submits their requests, starts the workflow once all are
/// due and times it until every request is Completed; then checks that their rows are gone.
async fn run(
    db: &Db,
    settings: &Settings,
    checks: &mut Checks,
    store: &PgPool,
    schema: &str,
    batch: Option<u32>,
) -> anyhow::Result<()> {
    let backend = db.backend;
    let label = batch.map_or_else(|| "none".to_owned(), |max| format!("max{max}"));
    let prefix = format!("sql-{label}-{}", run_tag());
    let n = i64::try_from(settings.requests)?;
    seed(store, schema, &prefix, n).await?;
    let config = Arc::new(Config::parse(&config_text(
        &settings.postgres_url,
        schema,
        batch,
        settings.dispatch_concurrency,
    ))?);
    let requests = db.requests(config.clone());
    let api = start_api(requests.clone()).await?;
    let client = http_client(SUBMIT_CONCURRENCY * 2)?;
    let submitted = submit_many(
        &client,
        &api.base,
        &prefix,
        settings.requests,
        SUBMIT_CONCURRENCY,
        settings.time_limit,
    )
    .await;
    if submitted.ok == 0 {
        api.stop().await;
        bail!("lifecycle-sql {backend}: no request was submitted");
    }
    // The one-second grace period of every request is over: all are due at the start.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let start_position = db.head_position().await?;
    let started = Instant::now();
    let runtime = Runtime::start(
        requests,
        db.workflow(),
        config,
        MasterKey::from_bytes(MASTER_KEY),
        api.base.clone(),
    )?;
    let expected = i64::try_from(submitted.ok)?;
    let deadline = Instant::now() + settings.time_limit;
    let poll = Duration::from_millis(if settings.smoke { 50 } else { 200 });
    let completed = wait_for_completed(db, start_position, expected, deadline, poll).await?;
    let window = started.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(30), runtime.stop()).await;
    api.stop().await;
    let left = rows_left(store, schema, &prefix).await?;
    println!(
        "lifecycle-sql {backend} batch={label} requests={expected} completed={completed} \
         seconds={:.1} erasures_per_s={:.1} rows_left={left}",
        window.as_secs_f64(),
        per_second(u64::try_from(completed)?, window),
    );
    checks.expect(
        completed >= expected,
        format!("lifecycle-sql {backend} batch={label}: {completed} of {expected} completed"),
    );
    checks.expect(
        left == 0,
        format!("lifecycle-sql {backend} batch={label}: {left} rows of the erased subjects left"),
    );
    Ok(())
}

/// One `users` row and a few `sessions` rows for each of the subjects `{prefix}-{i}` the
/// submission will name.
async fn seed(store: &PgPool, schema: &str, prefix: &str, n: i64) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "INSERT INTO {schema}.users (user_id, email) \
         SELECT $1 || '-' || i, $1 || '-' || i || '@example.com' FROM generate_series(0, $2 - 1) i"
    ))
    .bind(prefix)
    .bind(n)
    .execute(store)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {schema}.sessions (user_id, n) \
         SELECT $1 || '-' || i, s FROM generate_series(0, $2 - 1) i, generate_series(1, $3) s"
    ))
    .bind(prefix)
    .bind(n)
    .bind(SESSIONS_PER_SUBJECT)
    .execute(store)
    .await?;
    Ok(())
}

/// Rows of the subjects `{prefix}-…` still in the store.
async fn rows_left(store: &PgPool, schema: &str, prefix: &str) -> anyhow::Result<i64> {
    let pattern = format!("{prefix}-%");
    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT (SELECT count(*) FROM {schema}.users WHERE user_id LIKE $1) \
              + (SELECT count(*) FROM {schema}.sessions WHERE user_id LIKE $1)"
    ))
    .bind(&pattern)
    .fetch_one(store)
    .await?;
    Ok(left)
}

/// The `lethe.toml` of a run: a one-second grace period, the two `sql` cleaners, `users` after
/// `sessions`, both batched when `batch` is given.
fn config_text(url: &str, schema: &str, batch: Option<u32>, dispatch_concurrency: u32) -> String {
    let batch = batch.map_or_else(String::new, |max| {
        format!("batch = {{ max = {max}, wait = \"200ms\" }}\n")
    });
    let retry =
        "retry = { max_attempts = 20, initial = \"100ms\", max = \"2s\", multiplier = 2.0 }";
    format!(
        "[policy]\ngrace_period = \"1s\"\nreminders = []\n\n\
         [engine]\npoll_interval = \"20ms\"\ndispatch_concurrency = {dispatch_concurrency}\n\n\
         [[cleaners]]\nname = \"sessions\"\nkind = \"sql\"\nurl = \"{url}\"\nmax_connections = 4\n\
         statements = [\"DELETE FROM {schema}.sessions WHERE user_id = :user_id\"]\n{retry}\n{batch}\n\
         [[cleaners]]\nname = \"users\"\nkind = \"sql\"\nurl = \"{url}\"\nmax_connections = 4\n\
         after = [\"sessions\"]\n\
         statements = [\"DELETE FROM {schema}.users WHERE user_id = :user_id\"]\n\
         verify = [\"SELECT count(*) FROM {schema}.sessions WHERE user_id = :user_id\"]\n{retry}\n{batch}"
    )
}
