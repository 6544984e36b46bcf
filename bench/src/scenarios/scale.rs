//! The `scale` scenario: reads that must not grow with history (ADR 37).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use lethe_engine::config::Config;

use crate::db::Db;
use crate::load::{per_second, percentile_ms};
use crate::services::{http_client, start_api};
use crate::{Checks, Settings};

use super::bulk::read_bulk;
use super::{run_tag, yes_no};

/// Lines per `POST /v1/requests:bulk` while loading.
const BULK_LINES: u64 = 50_000;
/// Calls of each read at each size.
const CALLS: usize = 50;
/// The target: every read's p99, at every size.
const TARGET_P99_MS: f64 = 50.0;

/// `scale`: loads requests through bulk intake up to each size of `--scale-requests`, brings
/// the `requests` projection up to date, then times [`CALLS`] calls of each read: the stats,
/// the dashboard page, the request list unfiltered and with each filter, and one request's
/// history.
pub async fn scale(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let api = start_api(db.requests(Arc::new(Config::default()))).await?;
    let client = http_client(4)?;
    let tag = run_tag();
    let database = db.database();
    let mut loaded = 0_u64;
    for &size in &settings.scale_requests {
        let started = Instant::now();
        let before = loaded;
        while loaded < size {
            let lines = BULK_LINES.min(size - loaded);
            let body: String = (loaded..loaded + lines)
                .map(|i| format!("{{\"subject\":{{\"user_id\":\"scale-{tag}-{i}\"}}}}\n"))
                .collect();
            let url = format!("{}/v1/requests:bulk", api.base);
            let outcome = read_bulk(&client, &url, body, settings.time_limit).await;
            anyhow::ensure!(
                outcome.created == lines,
                "scale {backend}: {} of {lines} created (first error: {:?})",
                outcome.created,
                outcome.first_error
            );
            loaded += lines;
        }
        let intake = started.elapsed();
        let started = Instant::now();
        tokio::time::timeout(
            settings.time_limit,
            lethe_engine::projections::catch_up(&database.events, &database.projections),
        )
        .await
        .context("the projection did not catch up in time")??;
        println!(
            "scale {backend} requests={size} added={} intake_s={:.1} intake_per_s={:.1} \
             projected_s={:.1}",
            loaded - before,
            intake.as_secs_f64(),
            per_second(loaded - before, intake),
            started.elapsed().as_secs_f64(),
        );
        let reads = reads(&client, &api.base).await?;
        for (name, path) in reads {
            let timings = time_calls(&client, &format!("{}{path}", api.base)).await;
            let (p50, p99) = match &timings {
                Ok(sorted) => (percentile_ms(sorted, 50.0), percentile_ms(sorted, 99.0)),
                Err(_) => (0.0, 0.0),
            };
            println!(
                "scale {backend} requests={size} read={name} calls={CALLS} p50_ms={p50:.2} \
                 p99_ms={p99:.2} target=\"p99_ms<{TARGET_P99_MS}\" met={}",
                yes_no(timings.is_ok() && p99 < TARGET_P99_MS)
            );
            checks.expect(
                timings.is_ok(),
                format!("scale {backend} {name}: {:?}", timings.err()),
            );
        }
    }
    api.stop().await;
    Ok(())
}

/// Each read by name, and its path; the history is the first request's.
async fn reads(
    client: &reqwest::Client,
    base: &str,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let first: serde_json::Value = client
        .get(format!("{base}/v1/requests?limit=1"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = first["items"][0]["id"]
        .as_str()
        .context("the list is empty")?
        .to_owned();
    Ok(vec![
        ("stats", "/v1/stats".to_owned()),
        ("dashboard", "/dashboard".to_owned()),
        ("list", "/v1/requests".to_owned()),
        ("list_status", "/v1/requests?status=pending".to_owned()),
        (
            "list_jurisdiction",
            "/v1/requests?jurisdiction=gdpr".to_owned(),
        ),
        ("list_at_risk", "/v1/requests?at_risk=true".to_owned()),
        ("list_overdue", "/v1/requests?overdue=true".to_owned()),
        (
            "list_needs_attention",
            "/v1/requests?needs_attention=true".to_owned(),
        ),
        ("list_cleaner", "/v1/requests?cleaner=billing".to_owned()),
        ("history", format!("/v1/requests/{id}/history")),
    ])
}

/// [`CALLS`] calls of `url` one after another, their times in microseconds, sorted; the first
/// answer other than 200 as the error.
async fn time_calls(client: &reqwest::Client, url: &str) -> Result<Vec<u64>, String> {
    let mut timings = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("{url}: {status}"));
        }
        let micros = started.elapsed().as_micros();
        timings.push(u64::try_from(micros).unwrap_or(u64::MAX));
    }
    timings.sort_unstable();
    Ok(timings)
}
