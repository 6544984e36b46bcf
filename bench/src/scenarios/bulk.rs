//! The `bulk` scenario.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_engine::config::Config;

use crate::db::Db;
use crate::load::per_second;
use crate::services::{http_client, start_api};
use crate::{Checks, Settings};

use super::lifecycle::baseline_duration;
use super::{ratio, run_tag, yes_no};

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
pub(crate) struct BulkOutcome {
    pub created: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

/// Sends an NDJSON body and reads the NDJSON answer line by line as it streams back.
pub(crate) async fn read_bulk(
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
