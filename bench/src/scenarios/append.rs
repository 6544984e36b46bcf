//! The `append` scenario: Lethe's application service in-process, without HTTP, beside the
//! peer event store (esrs's `PgStore`, on Postgres) and the raw one-row insert, at the same
//! concurrency levels as `ingest`: what Lethe costs over a plain event store, and what HTTP adds
//! (compare with `ingest`).

use std::collections::BTreeMap;
use std::sync::Arc;

use lethe_engine::app::{Requests, Submission};
use lethe_engine::config::Config;

use crate::db::Db;
use crate::load::{self, LoadResult};
use crate::peer::Peer;
use crate::{Checks, Settings};

use super::{ratio, run_tag, yes_no, INGEST_LEVELS};

/// The target: in-process append at least this many times the peer's rate, at every level.
const TARGET_VS_PEER: f64 = 1.5;

/// `append`: `Requests::submit` of one new request per operation.
pub async fn append(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let requests = db.requests(Arc::new(Config::default()));
    let peer = db.pg_options();
    let tag = run_tag();
    let max_ops = if settings.smoke { 20_000 } else { 5_000_000 };
    let mut met = true;
    for concurrency in INGEST_LEVELS {
        let prefix = format!("append-{tag}-c{concurrency}");
        let lethe = load::run(
            concurrency,
            settings.seconds,
            max_ops,
            submit_op(&requests, prefix),
        )
        .await;
        let esrs = Peer::measure(peer.as_ref(), concurrency, settings.seconds, max_ops).await?;
        let baseline = db.baseline(concurrency, settings.seconds, max_ops).await?;
        println!(
            "append {backend} c={concurrency} requests={} requests_per_s={:.1} p50_ms={:.2} \
             p99_ms={:.2} errors={} {} {} baseline_rows_per_s={:.1} ratio_raw={:.2} {}",
            lethe.ok,
            lethe.rate(),
            lethe.percentile_ms(50.0),
            lethe.percentile_ms(99.0),
            lethe.errors,
            lethe.cpu_per_op(""),
            peer_figures(&lethe, esrs.as_ref()),
            baseline.rate(),
            ratio(lethe.rate(), baseline.rate()),
            baseline.cpu_per_op("baseline_"),
        );
        checks.expect(
            lethe.errors == 0 && lethe.ok > 0,
            format!(
                "append {backend} c={concurrency}: {} ok, {} errors (first: {:?})",
                lethe.ok, lethe.errors, lethe.first_error
            ),
        );
        if let Some(esrs) = &esrs {
            checks.expect(
                esrs.errors == 0 && esrs.ok > 0,
                format!(
                    "append {backend} c={concurrency}: esrs {} ok, {} errors (first: {:?})",
                    esrs.ok, esrs.errors, esrs.first_error
                ),
            );
            met &= ratio(lethe.rate(), esrs.rate()) >= TARGET_VS_PEER;
        }
    }
    if peer.is_some() {
        println!(
            "append {backend} target=\"ratio_esrs>={TARGET_VS_PEER} at every c\" met={}",
            yes_no(met)
        );
    }
    Ok(())
}

/// One operation of `append`: `Requests::submit` of subject `{prefix}-{n}`.
pub(crate) fn submit_op(
    requests: &Requests,
    prefix: String,
) -> impl Fn(u64) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync + 'static
{
    let requests = requests.clone();
    move |n| {
        let requests = requests.clone();
        let submission = Submission {
            subject: BTreeMap::from([("user_id".to_owned(), format!("{prefix}-{n}"))]),
            ..Submission::default()
        };
        Box::pin(async move {
            requests
                .submit(submission, None, "bench")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// `esrs_per_s=… esrs_p99_ms=… ratio_esrs=…` of Lethe's `lethe` against the peer's `esrs`, or
/// `esrs=n/a` where there is no peer (SQLite).
pub(crate) fn peer_figures(lethe: &LoadResult, esrs: Option<&LoadResult>) -> String {
    match esrs {
        Some(esrs) => format!(
            "esrs_per_s={:.1} esrs_p50_ms={:.2} esrs_p99_ms={:.2} ratio_esrs={:.2} {}",
            esrs.rate(),
            esrs.percentile_ms(50.0),
            esrs.percentile_ms(99.0),
            ratio(lethe.rate(), esrs.rate()),
            esrs.cpu_per_op("esrs_")
        ),
        None => "esrs=n/a".to_owned(),
    }
}
