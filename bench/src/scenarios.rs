//! The benchmark scenarios: `ingest`, `lifecycle`, `replay`, `memory`.
//! Each runs on one fresh database, prints one line per figure, and measures the raw insert
//! baseline on the same database in the same run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use lethe_domain::RequestId;
use lethe_engine::config::Config;
use lethe_engine::root::Runtime;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{Appended, EventMetadata};
use rand::Rng as _;
use uuid::Uuid;

use crate::db::{received_stream, CompletedCounter, Db};
use crate::load::{self, per_second};
use crate::services::{
    cleaner_totals, http_client, lifecycle_config, start_api, start_cleaners, stop_cleaners,
    submit_many, MASTER_KEY,
};
use crate::{Checks, Settings};

/// Client concurrency levels of `ingest`.
const INGEST_LEVELS: [usize; 4] = [1, 8, 32, 64];
/// Clients submitting the lifecycle and memory workloads.
const SUBMIT_CONCURRENCY: usize = 32;
/// Clients reading histories in `replay`.
const REPLAY_CONCURRENCY: usize = 8;
/// Tasks filling the log in `replay`.
const FILL_CONCURRENCY: usize = 32;
/// Events per stream in the replay log.
const EVENTS_PER_STREAM: u64 = 10;

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "no"
    }
}

fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        value / baseline
    } else {
        0.0
    }
}

/// A short unique tag for the subjects of one run.
fn run_tag() -> String {
    let id = Uuid::now_v7().simple().to_string();
    id[id.len() - 8..].to_owned()
}

/// `ingest`: `POST /v1/requests` over HTTP at 1, 8, 32 and 64 clients, each level bounded by
/// time and count, and the raw baseline at the same concurrency for the same time.
pub async fn ingest(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let requests = db.requests(Arc::new(Config::default()));
    let api = start_api(requests).await?;
    let client = http_client(128)?;
    let tag = run_tag();
    let max_ops = if settings.smoke { 20_000 } else { 5_000_000 };
    // Warm up the connections (HTTP and database) outside the measurement.
    let warm = submit_many(
        &client,
        &api.base,
        &format!("warm-{tag}"),
        64,
        8,
        settings.time_limit,
    )
    .await;
    checks.expect(
        warm.errors == 0,
        format!("ingest {backend}: warm-up failed: {:?}", warm.first_error),
    );
    let mut at_32 = None;
    for concurrency in INGEST_LEVELS {
        let lethe = submit_many(
            &client,
            &api.base,
            &format!("ingest-{tag}-c{concurrency}"),
            max_ops,
            concurrency,
            settings.seconds,
        )
        .await;
        let baseline = db.baseline(concurrency, settings.seconds, max_ops).await?;
        let r = ratio(lethe.rate(), baseline.rate());
        println!(
            "ingest {backend} c={concurrency} requests={} requests_per_s={:.1} p50_ms={:.2} \
             p99_ms={:.2} errors={} baseline_rows_per_s={:.1} baseline_p50_ms={:.2} \
             baseline_p99_ms={:.2} ratio={r:.2}",
            lethe.ok,
            lethe.rate(),
            lethe.percentile_ms(50.0),
            lethe.percentile_ms(99.0),
            lethe.errors,
            baseline.rate(),
            baseline.percentile_ms(50.0),
            baseline.percentile_ms(99.0),
        );
        checks.expect(
            lethe.errors == 0 && lethe.ok > 0,
            format!(
                "ingest {backend} c={concurrency}: {} ok, {} errors (first: {:?})",
                lethe.ok, lethe.errors, lethe.first_error
            ),
        );
        checks.expect(
            baseline.errors == 0 && baseline.ok > 0,
            format!(
                "ingest {backend} c={concurrency}: baseline {} ok, {} errors (first: {:?})",
                baseline.ok, baseline.errors, baseline.first_error
            ),
        );
        if concurrency == 32 {
            at_32 = Some((r, lethe.percentile_ms(99.0)));
        }
    }
    if let Some((r, p99)) = at_32 {
        println!(
            "ingest {backend} target=\"ratio>=1.0 and p99<50ms at c=32\" ratio={r:.2} \
             p99_ms={p99:.2} met={}",
            yes_no(r >= 1.0 && p99 < 50.0)
        );
    }
    api.stop().await;
    Ok(())
}

/// Lines in flight inside one bulk request (`CONCURRENCY` in engine/src/http/bulk.rs).
const BULK_CONCURRENCY: usize = 16;

/// `bulk`: one `POST /v1/requests:bulk` of N NDJSON lines, timed from the first byte sent to
/// the last result line read.
pub async fn bulk(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let api = start_api(db.requests(Arc::new(Config::default()))).await?;
    let client = http_client(4)?;
    let tag = run_tag();
    let count = settings.bulk_requests;
    let mut body = String::with_capacity(usize::try_from(count)?.saturating_mul(48));
    for i in 0..count {
        body.push_str(&format!(
            "{{\"subject\":{{\"user_id\":\"bulk-{tag}-{i}\"}}}}\n"
        ));
    }
    let started = Instant::now();
    let outcome = read_bulk(
        &client,
        &format!("{}/v1/requests:bulk", api.base),
        body,
        settings.time_limit,
    )
    .await;
    let elapsed = started.elapsed();
    api.stop().await;
    let timed_out = outcome.created + outcome.failed < count;
    let rate = per_second(outcome.created, elapsed);
    let baseline = db
        .baseline(
            BULK_CONCURRENCY,
            baseline_duration(settings, elapsed),
            u64::MAX,
        )
        .await?;
    let r = ratio(rate, baseline.rate());
    println!(
        "bulk {backend} requests={count} created={} errors={} seconds={:.2} requests_per_s={rate:.1} \
         baseline_c={BULK_CONCURRENCY} baseline_rows_per_s={:.1} ratio={r:.2}{}",
        outcome.created,
        outcome.failed,
        elapsed.as_secs_f64(),
        baseline.rate(),
        if timed_out {
            " timed_out=true (partial: the time limit was hit or the answer ended early)"
        } else {
            ""
        }
    );
    println!(
        "bulk {backend} target=\"requests_per_s>=20000\" requests_per_s={rate:.1} met={}",
        yes_no(rate >= 20_000.0 && !timed_out)
    );
    checks.expect(
        outcome.created == count,
        format!(
            "bulk {backend}: {} of {count} created, {} failed (first: {:?})",
            outcome.created, outcome.failed, outcome.first_error
        ),
    );
    checks.expect(
        baseline.errors == 0,
        format!(
            "bulk {backend}: baseline errors: {:?}",
            baseline.first_error
        ),
    );
    Ok(())
}

#[derive(Debug, Default)]
struct BulkOutcome {
    created: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Sends an NDJSON body and reads the NDJSON answer line by line as it streams back.
async fn read_bulk(
    client: &reqwest::Client,
    url: &str,
    body: String,
    time_limit: Duration,
) -> BulkOutcome {
    let mut outcome = BulkOutcome::default();
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .timeout(time_limit)
        .send()
        .await;
    let mut response = match response {
        Ok(r) if r.status() == reqwest::StatusCode::OK => r,
        Ok(r) => {
            outcome.first_error = Some(format!("POST {url}: {}", r.status()));
            return outcome;
        }
        Err(e) => {
            outcome.first_error = Some(format!("POST {url}: {e}"));
            return outcome;
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                pending.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
                    classify_bulk_line(&pending[start..start + end], &mut outcome);
                    start += end + 1;
                }
                pending.drain(..start);
            }
            Ok(None) => break,
            Err(e) => {
                outcome
                    .first_error
                    .get_or_insert_with(|| format!("reading the answer: {e}"));
                break;
            }
        }
    }
    outcome
}

fn classify_bulk_line(line: &[u8], outcome: &mut BulkOutcome) {
    let created = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("created").and_then(serde_json::Value::as_bool));
    if created == Some(true) {
        outcome.created += 1;
    } else {
        outcome.failed += 1;
        outcome
            .first_error
            .get_or_insert_with(|| String::from_utf8_lossy(line).into_owned());
    }
}

/// `rebuild`: fills a log of N events, then rebuilds every read model from it
/// (`lethe projections rebuild`'s code path) and times the replay.
pub async fn rebuild(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    // Concurrent appends (group-committed), so that on Postgres the read order (transaction
    // id, position) differs from position order, as in a log written by a busy engine.
    let (_, events) = fill_log(db, settings, checks, "rebuild", FILL_CONCURRENCY).await?;
    let database = db.database();
    let started = Instant::now();
    let mut handled = 0_u64;
    let mut progress = |_: u64, _: i64| {};
    for name in lethe_engine::read_models::ALL {
        let run = lethe_engine::read_models::rebuild(
            &database.events,
            &database.read_models,
            name,
            &mut progress,
        );
        match tokio::time::timeout(settings.time_limit, run).await {
            Ok(result) => handled += result.with_context(|| format!("rebuilding {name}"))?,
            Err(_) => bail!(
                "rebuild {backend}: {name} was not rebuilt within {} s",
                settings.time_limit.as_secs()
            ),
        }
    }
    let elapsed = started.elapsed();
    let rate = per_second(handled, elapsed);
    let baseline = db
        .baseline(1, baseline_duration(settings, elapsed), u64::MAX)
        .await?;
    println!(
        "rebuild {backend} read_models={} events={events} handled={handled} seconds={:.2} \
         events_per_s={rate:.1} baseline_c=1 baseline_rows_per_s={:.1} ratio={:.2}",
        lethe_engine::read_models::ALL.join(","),
        elapsed.as_secs_f64(),
        baseline.rate(),
        ratio(rate, baseline.rate()),
    );
    println!(
        "rebuild {backend} target=\"events_per_s>=100000 (1,000,000-event log)\" events={events} \
         events_per_s={rate:.1} met={}",
        yes_no(rate >= 100_000.0 && events >= 1_000_000)
    );
    let expected = u64::try_from(events)? * lethe_engine::read_models::ALL.len() as u64;
    checks.expect(
        handled == expected,
        format!("rebuild {backend}: handled {handled} events, expected {expected}"),
    );
    Ok(())
}

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

    let submitted = submit_many(
        &client,
        &api.base,
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
    if submitted.ok == 0 {
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
    );
    let expected = i64::try_from(submitted.ok)?;
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
    let (calls, failures) = cleaner_totals(&cleaners);
    stop_cleaners(cleaners).await;
    api.stop().await;

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
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long the raw baseline runs after a scenario whose measured window was `window`: the
/// same time, at least `--seconds` and at most 30 s (`--seconds` in a smoke run).
fn baseline_duration(settings: &Settings, window: Duration) -> Duration {
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
async fn wait_for_completed(
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

/// `replay`: fills a log of N events (streams of 10, appended by many tasks), then reads
/// `GET /v1/requests/{id}/history` for random requests at concurrency 8.
pub async fn replay(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let (ids, events) = fill_log(db, settings, checks, "replay", FILL_CONCURRENCY).await?;

    let requests = db.requests(Arc::new(Config::default()));
    let api = start_api(requests).await?;
    let client = http_client(REPLAY_CONCURRENCY * 2)?;
    let max_ops = if settings.smoke { 50_000 } else { 10_000_000 };
    let read_history = {
        let client = client.clone();
        let ids = ids.clone();
        let base: Arc<str> = Arc::from(api.base.as_str());
        move |_| {
            let client = client.clone();
            let id = ids[rand::rng().random_range(0..ids.len())];
            let url = format!("{base}/v1/requests/{id}/history");
            async move { get_history(&client, &url).await }
        }
    };
    // Warm-up: connections and the first pages of the log, outside the measurement.
    let warm = load::run(
        REPLAY_CONCURRENCY,
        settings.seconds.min(Duration::from_secs(1)),
        200,
        read_history.clone(),
    )
    .await;
    checks.expect(
        warm.errors == 0,
        format!("replay {backend}: warm-up failed: {:?}", warm.first_error),
    );
    let lethe = load::run(REPLAY_CONCURRENCY, settings.seconds, max_ops, read_history).await;
    api.stop().await;

    let probe = db.probe();
    let raw_ids = ids.clone();
    let raw = load::run(REPLAY_CONCURRENCY, settings.seconds, max_ops, move |_| {
        let probe = probe.clone();
        let id = raw_ids[rand::rng().random_range(0..raw_ids.len())];
        async move { probe.read_stream(id).await.map(drop) }
    })
    .await;
    let baseline = db
        .baseline(REPLAY_CONCURRENCY, settings.seconds, max_ops)
        .await?;
    let p99 = lethe.percentile_ms(99.0);
    println!(
        "replay {backend} events={events} c={REPLAY_CONCURRENCY} requests={} requests_per_s={:.1} \
         p50_ms={:.2} p95_ms={:.2} p99_ms={p99:.2} errors={} raw_reads_per_s={:.1} \
         raw_p99_ms={:.2} read_ratio={:.2} baseline_rows_per_s={:.1} ratio={:.2}",
        lethe.ok,
        lethe.rate(),
        lethe.percentile_ms(50.0),
        lethe.percentile_ms(95.0),
        lethe.errors,
        raw.rate(),
        raw.percentile_ms(99.0),
        ratio(lethe.rate(), raw.rate()),
        baseline.rate(),
        ratio(lethe.rate(), baseline.rate()),
    );
    println!(
        "replay {backend} target=\"p99<5ms (1,000,000-event log)\" events={events} p99_ms={p99:.2} met={}",
        yes_no(p99 < 5.0 && events >= 1_000_000)
    );
    checks.expect(
        lethe.errors == 0 && lethe.ok > 0,
        format!(
            "replay {backend}: {} ok, {} errors (first: {:?})",
            lethe.ok, lethe.errors, lethe.first_error
        ),
    );
    checks.expect(
        raw.errors == 0 && baseline.errors == 0,
        format!(
            "replay {backend}: raw read or baseline errors: {:?} {:?}",
            raw.first_error, baseline.first_error
        ),
    );
    Ok(())
}

/// Fills the log with `--events` events: streams of 10 (see [`received_stream`]), each
/// appended in one `EventStore::append` by one of many concurrent tasks. Returns the request
/// ids and the number of events in the log.
async fn fill_log(
    db: &Db,
    settings: &Settings,
    checks: &mut Checks,
    scenario: &str,
    concurrency: usize,
) -> anyhow::Result<(Arc<[RequestId]>, i64)> {
    let backend = db.backend;
    let target_events = settings.events;
    let streams = target_events.div_ceil(EVENTS_PER_STREAM);
    let ids = Arc::new(Mutex::new(Vec::<RequestId>::with_capacity(
        usize::try_from(streams).unwrap_or(0),
    )));
    let config = Arc::new(Config::default());
    let store = db.events();
    let fill = {
        let ids = ids.clone();
        load::run(concurrency, settings.time_limit, streams, move |i| {
            let ids = ids.clone();
            let config = config.clone();
            let store = store.clone();
            async move {
                let len = target_events
                    .saturating_sub(i * EVENTS_PER_STREAM)
                    .min(EVENTS_PER_STREAM);
                let (id, events) = received_stream(&config, usize::try_from(len).unwrap_or(0), i)
                    .map_err(|e| e.to_string())?;
                match store
                    .append(id, 0, &events, &EventMetadata::new("system:bench"))
                    .await
                {
                    Ok(Appended::Written(_)) => {
                        ids.lock().map_err(|e| e.to_string())?.push(id);
                        Ok(())
                    }
                    Ok(Appended::Duplicate(_)) => Err("unexpected duplicate".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
    };
    let ids: Arc<[RequestId]> =
        Arc::from(std::mem::take(&mut *ids.lock().map_err(|e| anyhow!("{e}"))?).into_boxed_slice());
    let events = db.count_events_after(0).await?;
    println!(
        "{scenario} {backend} phase=fill c={concurrency} events={events} streams={} \
         events_per_s={:.1} appends_per_s={:.1} errors={}",
        ids.len(),
        per_second(u64::try_from(events)?, fill.elapsed),
        fill.rate(),
        fill.errors
    );
    checks.expect(
        fill.errors == 0 && u64::try_from(events)? == target_events,
        format!(
            "{scenario} {backend}: the log holds {events} of {target_events} events ({} errors, first: {:?})",
            fill.errors, fill.first_error
        ),
    );
    if ids.is_empty() {
        bail!("{scenario} {backend}: the log is empty");
    }
    Ok((ids, events))
}

async fn get_history(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("GET {url}: {status}"));
    }
    // `"verified":true` proves the whole chain was read and checked.
    if !body.windows(15).any(|w| w == b"\"verified\":true") {
        return Err(format!("GET {url}: the history is not verified"));
    }
    Ok(())
}

/// `memory`: `lethe serve` as a child process on the benchmark database, driven over HTTP
/// through a lifecycle-like workload; its peak RSS (VmHWM) is the figure.
pub async fn memory(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let scenario_deadline = Instant::now() + settings.time_limit;
    let binary = lethe_binary(settings).await?;
    let cleaners = start_cleaners().await?;
    let work = tempfile::Builder::new()
        .prefix("lethe-bench-serve-")
        .tempdir()?;
    let config_path = work.path().join("lethe.toml");
    std::fs::write(
        &config_path,
        lifecycle_config(&cleaners, settings.dispatch_concurrency),
    )?;
    let key_path = work.path().join("master.key");
    std::fs::write(
        &key_path,
        MASTER_KEY
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )?;
    let log_path = work.path().join("serve.log");
    let log = std::fs::File::create(&log_path)?;
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let base = format!("http://{listen}");
    let mut child = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(&config_path)
        .arg("--database-url")
        .arg(db.database_url())
        .arg("serve")
        .arg("--listen")
        .arg(listen.to_string())
        .env("LETHE_MASTER_KEY_FILE", &key_path)
        .env_remove("LETHE_DATABASE_URL")
        .env_remove("LETHE_LISTEN")
        .env_remove("LETHE_CONFIG")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("lethe serve exited at once"))?;

    let result = drive_child(
        db,
        settings,
        checks,
        &mut child,
        pid,
        &base,
        scenario_deadline,
    )
    .await;
    stop_child(&mut child, pid).await;
    stop_cleaners(cleaners).await;
    if result.is_err() {
        eprintln!(
            "memory {backend}: lethe serve's log ({}):\n{}",
            log_path.display(),
            tail(&log_path, 30)
        );
    }
    result
}

async fn drive_child(
    db: &Db,
    settings: &Settings,
    checks: &mut Checks,
    child: &mut tokio::process::Child,
    pid: u32,
    base: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let backend = db.backend;
    let client = http_client(SUBMIT_CONCURRENCY * 2)?;
    wait_until_ready(&client, base, child).await?;
    let idle = read_memory(pid)?;
    let start_position = db.head_position().await?;
    let started = Instant::now();
    let submitted = submit_many(
        &client,
        base,
        &format!("memory-{}", run_tag()),
        settings.requests,
        SUBMIT_CONCURRENCY,
        settings.time_limit,
    )
    .await;
    checks.expect(
        submitted.errors == 0 && submitted.ok == settings.requests,
        format!(
            "memory {backend}: submitted {} of {} ({} errors, first: {:?})",
            submitted.ok, settings.requests, submitted.errors, submitted.first_error
        ),
    );
    let expected = i64::try_from(submitted.ok)?;
    let poll = if settings.smoke {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(200)
    };
    let mut peak_rss_kb = idle.rss_kb;
    let mut counter = CompletedCounter::after(start_position);
    let completed = loop {
        let completed = db.count_completed(&mut counter).await?;
        if let Ok(now) = read_memory(pid) {
            peak_rss_kb = peak_rss_kb.max(now.rss_kb);
        }
        if completed >= expected || Instant::now() >= deadline {
            break completed;
        }
        if let Some(status) = child.try_wait()? {
            bail!("lethe serve exited during the workload: {status}");
        }
        tokio::time::sleep(poll).await;
    };
    let window = started.elapsed();
    let events = db.count_events_after(start_position).await?;
    let end = read_memory(pid)?;
    let baseline = db
        .baseline(SUBMIT_CONCURRENCY, settings.seconds, u64::MAX)
        .await?;
    let events_per_s = per_second(u64::try_from(events)?, window);
    let peak_mb = end.hwm_kb as f64 / 1024.0;
    let timed_out = completed < expected;
    println!(
        "memory {backend} requests={expected} completed={completed} seconds={:.1} \
         peak_rss_mb={peak_mb:.1} idle_rss_mb={:.1} sampled_peak_rss_mb={:.1} events={events} \
         events_per_s={events_per_s:.1} baseline_c={SUBMIT_CONCURRENCY} \
         baseline_rows_per_s={:.1} ratio={:.2}{}",
        window.as_secs_f64(),
        idle.rss_kb as f64 / 1024.0,
        peak_rss_kb as f64 / 1024.0,
        baseline.rate(),
        ratio(events_per_s, baseline.rate()),
        if timed_out {
            " timed_out=true (partial: the time limit was hit)"
        } else {
            ""
        }
    );
    println!(
        "memory {backend} target=\"peak_rss_mb<200\" peak_rss_mb={peak_mb:.1} met={}",
        yes_no(peak_mb < 200.0)
    );
    checks.expect(
        !timed_out,
        format!("memory {backend}: {completed} of {expected} completed within the time limit"),
    );
    Ok(())
}

async fn wait_until_ready(
    client: &reqwest::Client,
    base: &str,
    child: &mut tokio::process::Child,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("lethe serve exited before it was ready: {status}");
        }
        let ready = client
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("lethe serve was not ready on {base} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM (a graceful stop), then SIGKILL if it is still running after 15 s.
async fn stop_child(child: &mut tokio::process::Child, pid: u32) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
}

/// VmRSS and VmHWM (peak RSS) of a process, from /proc/PID/status.
fn read_memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_memory(&status).ok_or_else(|| anyhow!("no VmRSS/VmHWM in /proc/{pid}/status"))
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    Some(Memory {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `lethe` binary: `--lethe-bin`, else the one beside this benchmark, else
/// `target/release/lethe` (built with cargo when missing).
async fn lethe_binary(settings: &Settings) -> anyhow::Result<PathBuf> {
    if let Some(path) = &settings.lethe_bin {
        // Absolute: the child runs in a directory of its own.
        return std::fs::canonicalize(path)
            .with_context(|| format!("--lethe-bin {}", path.display()));
    }
    if let Some(beside) = std::env::current_exe()?
        .parent()
        .map(|dir| dir.join("lethe"))
        .filter(|p| p.is_file())
    {
        return Ok(beside);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .to_path_buf();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let release = target.join("release").join("lethe");
    if release.is_file() {
        return Ok(release);
    }
    eprintln!(
        "building {} (cargo build --release --bin lethe)",
        release.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = tokio::process::Command::new(cargo)
        .args(["build", "--release", "-p", "lethe-engine", "--bin", "lethe"])
        .current_dir(&root)
        .status()
        .await?;
    if !status.success() || !release.is_file() {
        bail!("building the lethe binary failed ({status})");
    }
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_proc_status() {
        let status =
            "Name:\tlethe\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\n";
        let memory = parse_memory(status).unwrap();
        assert_eq!(memory.hwm_kb, 51234);
        assert_eq!(memory.rss_kb, 40960);
        let own = read_memory(std::process::id()).unwrap();
        assert!(own.hwm_kb >= own.rss_kb && own.rss_kb > 0);
    }

    #[test]
    fn ratios_of_nothing_are_zero() {
        assert!(ratio(5.0, 0.0).abs() < 1e-9);
        assert!((ratio(5.0, 10.0) - 0.5).abs() < 1e-9);
    }
}
