//! The `replay` scenario.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use lethe_domain::RequestId;
use lethe_engine::config::Config;
use lethe_engine::store::{Appended, EventMetadata};
use rand::Rng as _;

use crate::db::{received_stream, Db};
use crate::load::{self, per_second};
use crate::services::{http_client, start_api};
use crate::{Checks, Settings};

use super::{ratio, yes_no, EVENTS_PER_STREAM, FILL_CONCURRENCY, REPLAY_CONCURRENCY};

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
         raw_p99_ms={:.2} read_ratio={:.2} baseline_rows_per_s={:.1} ratio={:.2} {} {}",
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
        lethe.cpu_per_op(""),
        raw.cpu_per_op("raw_"),
    );
    // The tail against a raw read of the same streams, measured beside it: the history is
    // verified (hash chain) on every read, the raw read only fetches the rows.
    let raw_p99 = raw.percentile_ms(99.0);
    println!(
        "replay {backend} target=\"p99<=2x raw stream read p99 (1,000,000-event log)\" \
         events={events} p99_ms={p99:.2} raw_p99_ms={raw_p99:.2} p99_ratio={:.2} met={}",
        ratio(p99, raw_p99),
        yes_no(p99 <= 2.0 * raw_p99 && events >= 1_000_000)
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
pub(super) async fn fill_log(
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

pub(super) async fn get_history(client: &reqwest::Client, url: &str) -> Result<(), String> {
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
