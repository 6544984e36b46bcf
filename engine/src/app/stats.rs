//! The dashboard figures (`GET /v1/stats`, and the page at `/dashboard`), read from the counters
//! the `requests` projection keeps beside its rows (ADR 37).

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeDelta};
use lethe_projections::tallies;
use serde::Serialize;

use crate::projections::{ProjectionStore, Tally};
use crate::store::StoreError;

/// The dashboard figures, read from the counters of the `requests` projection.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    /// Open requests whose deadline is at most `at_risk_days` away.
    pub at_risk: u64,
    pub at_risk_days: u32,
    /// Open requests past their deadline.
    pub overdue: u64,
    pub cleaners: BTreeMap<String, CleanerStats>,
    /// Time from receipt to completion, by month of completion (`YYYY-MM`).
    pub completion: BTreeMap<String, CompletionStats>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct CleanerStats {
    /// Attempts made, all requests together.
    pub attempts: u64,
    pub succeeded: u64,
    pub exhausted: u64,
    pub skipped: u64,
    /// Succeeded requests per attempt made.
    pub success_rate: f64,
    /// Time from Due to this cleaner's success, in seconds (to 4 significant digits, ADR 37).
    pub p50_seconds: f64,
    pub p95_seconds: f64,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct CompletionStats {
    pub completed: u64,
    /// To 4 significant digits (ADR 37).
    pub median_days: f64,
    pub mean_days: f64,
}

/// Microseconds in a second and in a day.
const SECOND: f64 = 1e6;
const DAY: f64 = 86_400e6;

fn count(tally: Tally) -> u64 {
    u64::try_from(tally.count).unwrap_or(0)
}

/// A histogram's value at quantile `q`, in the unit `unit` microseconds long (0 when empty).
#[allow(clippy::cast_precision_loss)] // durations far below 2^52 microseconds
fn quantile_in(histogram: &[(i64, i64)], q: f64, unit: f64) -> f64 {
    tallies::quantile(histogram, q).map_or(0.0, |micros| micros as f64 / unit)
}

/// Reads the figures from the counters the projection keeps (ADR 37) and counts the at-risk
/// and overdue requests on the index of open deadlines: a few hundred rows at most, however
/// long the history.
#[allow(clippy::cast_precision_loss)]
pub async fn compute_stats(
    store: &dyn ProjectionStore,
    at_risk_days: u32,
    today: NaiveDate,
) -> Result<StatsView, StoreError> {
    let mut stats = StatsView {
        at_risk_days,
        overdue: store.count_open(None, Some(today)).await?,
        at_risk: store
            .count_open(
                Some(today),
                Some(today + TimeDelta::days(i64::from(at_risk_days) + 1)),
            )
            .await?,
        ..StatsView::default()
    };
    let figures = [
        tallies::STATUS,
        tallies::CLEANER_ATTEMPTS,
        tallies::CLEANER_SUCCEEDED,
        tallies::CLEANER_EXHAUSTED,
        tallies::CLEANER_SKIPPED,
        tallies::CLEANER_LATENCY,
        tallies::COMPLETION,
    ]
    .map(str::to_owned);
    let mut counters = store.tallies(&figures).await?;
    counters.sort_by(|a, b| a.0.cmp(&b.0));
    let mut latencies: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut completions: BTreeMap<String, (Vec<(i64, i64)>, i128)> = BTreeMap::new();
    for (key, tally) in counters.into_iter().filter(|(_, t)| t.count > 0) {
        let n = count(tally);
        match key.figure.as_str() {
            tallies::STATUS => {
                stats.total += n;
                stats.by_status.insert(key.key, n);
            }
            tallies::CLEANER_ATTEMPTS => {
                let entry = stats.cleaners.entry(key.key).or_default();
                entry.attempts += u64::try_from(tally.sum).unwrap_or(0);
            }
            tallies::CLEANER_SUCCEEDED => stats.cleaners.entry(key.key).or_default().succeeded += n,
            tallies::CLEANER_EXHAUSTED => stats.cleaners.entry(key.key).or_default().exhausted += n,
            tallies::CLEANER_SKIPPED => stats.cleaners.entry(key.key).or_default().skipped += n,
            tallies::CLEANER_LATENCY => latencies
                .entry(key.key)
                .or_default()
                .push((key.bucket, tally.count)),
            _ => {
                let (histogram, sum) = completions.entry(key.key).or_default();
                histogram.push((key.bucket, tally.count));
                *sum += i128::from(tally.sum);
            }
        }
    }
    for (name, entry) in &mut stats.cleaners {
        entry.success_rate = if entry.attempts == 0 {
            0.0
        } else {
            entry.succeeded as f64 / entry.attempts as f64
        };
        if let Some(histogram) = latencies.get(name) {
            entry.p50_seconds = quantile_in(histogram, 0.5, SECOND);
            entry.p95_seconds = quantile_in(histogram, 0.95, SECOND);
        }
    }
    for (month, (histogram, sum)) in completions {
        let completed: i64 = histogram.iter().map(|(_, n)| n).sum();
        stats.completion.insert(
            month,
            CompletionStats {
                completed: u64::try_from(completed).unwrap_or(0),
                median_days: quantile_in(&histogram, 0.5, DAY),
                mean_days: sum as f64 / completed as f64 / DAY,
            },
        );
    }
    Ok(stats)
}
