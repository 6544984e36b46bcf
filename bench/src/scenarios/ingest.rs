//! The `ingest` scenario.

use std::sync::Arc;

use lethe_engine::config::Config;

use crate::db::Db;
use crate::peer::Peer;
use crate::services::{http_client, start_api, submit_many};
use crate::{Checks, Settings};

use super::append::peer_figures;
use super::{ratio, run_tag, yes_no, INGEST_LEVELS};

/// `ingest`: `POST /v1/requests` over HTTP at 1, 8, 32 and 64 clients, each level bounded by
/// time and count, and at the same concurrency for the same time the peer event store (esrs, on
/// Postgres) and the raw baseline.
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
    let peer = db.pg_options();
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
        let esrs = Peer::measure(peer.as_ref(), concurrency, settings.seconds, max_ops).await?;
        let baseline = db.baseline(concurrency, settings.seconds, max_ops).await?;
        let r = ratio(lethe.rate(), baseline.rate());
        println!(
            "ingest {backend} c={concurrency} requests={} requests_per_s={:.1} p50_ms={:.2} \
             p99_ms={:.2} errors={} {} {} baseline_rows_per_s={:.1} baseline_p50_ms={:.2} \
             baseline_p99_ms={:.2} ratio={r:.2} {}",
            lethe.ok,
            lethe.rate(),
            lethe.percentile_ms(50.0),
            lethe.percentile_ms(99.0),
            lethe.errors,
            lethe.cpu_per_op(""),
            peer_figures(&lethe, esrs.as_ref()),
            baseline.rate(),
            baseline.percentile_ms(50.0),
            baseline.percentile_ms(99.0),
            baseline.cpu_per_op("baseline_"),
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
