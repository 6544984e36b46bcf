//! The `lifecycle` scenario.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use lethe_engine::config::Config;
use lethe_engine::root::Runtime;
use lethe_engine::store::master_key::MasterKey;

use crate::db::{Backend, CompletedCounter, Db};
use crate::load::per_second;
use crate::services::{
    cleaner_totals, http_client, lifecycle_config, start_api, start_cleaners, stop_cleaners,
    submit_many, MASTER_KEY,
};
use crate::{Checks, Settings};

use super::{ratio, run_tag, yes_no, SUBMIT_CONCURRENCY};

/// `lifecycle`: N requests submitted over HTTP while the workflow is stopped; once all are due,
/// the workflow starts and the clock runs until every request is Completed (5 loopback
/// cleaners, one failing 10 % of calls with 503).
pub async fn lifecycle(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let scenario_deadline = Instant::now() + settings.time_limit;
    let cleaners = start_cleaners().await?;
    let config = Arc::new(Config::parse(&lifecycle_config(
        &cleaners,
        settings.dispatch_concurrency,
    ))?);
    let requests = db.requests(config.clone());
    let api = start_api(requests.clone()).await?;
    let client = http_client(SUBMIT_CONCURRENCY * 2)?;

    let submitted = submit_phase(&client, &api.base, backend, settings, checks).await;
    if submitted == 0 {
        stop_cleaners(cleaners).await;
        api.stop().await;
        bail!("lifecycle {backend}: no request was submitted");
    }
    // Every request's one-second grace period is over: all are due when the workflow starts.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let start_position = db.head_position().await?;
    let started = Instant::now();
    let started_unix = unix_now();
    let runtime = Runtime::start(
        requests,
        db.workflow(),
        config,
        MasterKey::from_bytes(MASTER_KEY),
        api.base.clone(),
    )?;
    let expected = i64::try_from(submitted)?;
    let poll = if settings.smoke {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(200)
    };
    let completed =
        wait_for_completed(db, start_position, expected, scenario_deadline, poll).await?;
    let window = started.elapsed();
    let events = db.count_events_after(start_position).await?;
    // When the last request became due: if that is close to the end, the timer worker (which
    // turns due jobs into Due events) bounds the run; if much earlier, the dispatch does.
    let last_due_s = db
        .last_event_after(start_position, "Due", started_unix)
        .await?;
    if tokio::time::timeout(Duration::from_secs(30), runtime.stop())
        .await
        .is_err()
    {
        eprintln!("lifecycle {backend}: the workflow did not stop within 30 s");
    }
    let (cleaner_calls, cleaner_503s) = cleaner_totals(&cleaners);
    stop_cleaners(cleaners).await;
    api.stop().await;
    let run = Run {
        expected,
        completed,
        window,
        events,
        last_due_s,
        cleaner_calls,
        cleaner_503s,
    };
    report(db, settings, checks, &run).await
}

/// Submits `--requests` requests over HTTP while the workflow is stopped; returns how many
/// were accepted.
async fn submit_phase(
    client: &reqwest::Client,
    base: &str,
    backend: Backend,
    settings: &Settings,
    checks: &mut Checks,
) -> u64 {
    let submitted = submit_many(
        client,
        base,
        &format!("lifecycle-{}", run_tag()),
        settings.requests,
        SUBMIT_CONCURRENCY,
        settings.time_limit,
    )
    .await;
    println!(
        "lifecycle {backend} phase=submit c={SUBMIT_CONCURRENCY} requests={} requests_per_s={:.1} \
         p99_ms={:.2} errors={}",
        submitted.ok,
        submitted.rate(),
        submitted.percentile_ms(99.0),
        submitted.errors
    );
    checks.expect(
        submitted.errors == 0 && submitted.ok == settings.requests,
        format!(
            "lifecycle {backend}: submitted {} of {} ({} errors, first: {:?})",
            submitted.ok, settings.requests, submitted.errors, submitted.first_error
        ),
    );
    submitted.ok
}

/// What one lifecycle run measured.
struct Run {
    expected: i64,
    completed: i64,
    window: Duration,
    events: i64,
    last_due_s: f64,
    cleaner_calls: u64,
    cleaner_503s: u64,
}

/// Measures the raw baseline for as long as the run took and prints the figures.
async fn report(
    db: &Db,
    settings: &Settings,
    checks: &mut Checks,
    run: &Run,
) -> anyhow::Result<()> {
    let backend = db.backend;
    let Run {
        expected,
        completed,
        window,
        events,
        last_due_s,
        cleaner_calls: calls,
        cleaner_503s: failures,
    } = *run;
    // The engine runs up to `dispatch_concurrency` cleaner calls, each ending in an append,
    // beside the timer worker and the saga.
    let concurrency = usize::try_from(settings.dispatch_concurrency)?;
    let baseline_for = baseline_duration(settings, window);
    let baseline = db.baseline(concurrency, baseline_for, u64::MAX).await?;
    let events_per_s = per_second(u64::try_from(events)?, window);
    let r = ratio(events_per_s, baseline.rate());
    let timed_out = completed < expected;
    println!(
        "lifecycle {backend} requests={expected} completed={completed} seconds={:.1} \
         events={events} events_per_s={events_per_s:.1} completed_per_s={:.1} \
         last_due_at_s={last_due_s:.1} cleaner_calls={calls} cleaner_503s={failures} \
         baseline_c={concurrency} \
         baseline_rows_per_s={:.1} ratio={r:.2}{}",
        window.as_secs_f64(),
        per_second(u64::try_from(completed)?, window),
        baseline.rate(),
        if timed_out {
            " timed_out=true (partial: the time limit was hit)"
        } else {
            ""
        }
    );
    println!(
        "lifecycle {backend} target=\"events_per_s>=5000\" events_per_s={events_per_s:.1} met={}",
        yes_no(events_per_s >= 5000.0 && !timed_out)
    );
    checks.expect(
        !timed_out,
        format!("lifecycle {backend}: {completed} of {expected} completed within the time limit"),
    );
    checks.expect(
        baseline.errors == 0,
        format!(
            "lifecycle {backend}: baseline errors: {:?}",
            baseline.first_error
        ),
    );
    Ok(())
}

/// Now, as Unix seconds.
pub(super) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long the raw baseline runs after a scenario whose measured window was `window`: the
/// same time, at least `--seconds` and at most 30 s (`--seconds` in a smoke run).
pub(super) fn baseline_duration(settings: &Settings, window: Duration) -> Duration {
    if settings.smoke {
        settings.seconds
    } else {
        window.clamp(
            settings.seconds,
            Duration::from_secs(30).max(settings.seconds),
        )
    }
}

/// Polls until `expected` requests have Completed after `start_position`, or `deadline`.
pub(super) async fn wait_for_completed(
    db: &Db,
    start_position: i64,
    expected: i64,
    deadline: Instant,
    poll: Duration,
) -> anyhow::Result<i64> {
    let mut counter = CompletedCounter::after(start_position);
    loop {
        let completed = db.count_completed(&mut counter).await?;
        if completed >= expected || Instant::now() >= deadline {
            return Ok(completed);
        }
        tokio::time::sleep(poll).await;
    }
}
