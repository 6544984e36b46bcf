//! The dashboard figures (`GET /v1/stats`, and the page at `/dashboard`), computed over every
//! row of the `requests` projection.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use lethe_domain::RequestStatus;
use lethe_projections::requests::days_left;
use serde::Serialize;

use crate::projections::{ProjectionStore, RequestFilter};
use crate::store::StoreError;

/// Rows read at once.
const PAGE: u32 = 1000;

/// The dashboard figures, computed over every row of the `requests` projection.
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
    /// Time from Due to this cleaner's success, in seconds.
    pub p50_seconds: f64,
    pub p95_seconds: f64,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct CompletionStats {
    pub completed: u64,
    pub median_days: f64,
    pub mean_days: f64,
}

#[allow(clippy::cast_precision_loss)] // counts and seconds far below 2^52
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Accumulates the figures row by row (never the whole table in memory at once).
#[allow(clippy::cast_precision_loss)]
pub async fn compute_stats(
    store: &dyn ProjectionStore,
    at_risk_days: u32,
    today: NaiveDate,
) -> Result<StatsView, StoreError> {
    let mut stats = StatsView {
        at_risk_days,
        ..StatsView::default()
    };
    let mut latencies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut completions: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_requests(&RequestFilter::default(), after, PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for row in &page {
            stats.total += 1;
            *stats.by_status.entry(row.status.to_string()).or_default() += 1;
            let left = days_left(row.deadline, today);
            if row.is_open() && left < 0 {
                stats.overdue += 1;
            } else if row.is_open() && left <= i64::from(at_risk_days) {
                stats.at_risk += 1;
            }
            for cleaner in &row.cleaners {
                let entry = stats.cleaners.entry(cleaner.name.clone()).or_default();
                entry.attempts += u64::from(cleaner.attempts);
                match cleaner.status.as_str() {
                    "succeeded" => {
                        entry.succeeded += 1;
                        if let Some(done) = cleaner.finished_at {
                            let seconds = (done - cleaner.started_at).as_seconds_f64().max(0.0);
                            latencies
                                .entry(cleaner.name.clone())
                                .or_default()
                                .push(seconds);
                        }
                    }
                    "exhausted" => entry.exhausted += 1,
                    "skipped" => entry.skipped += 1,
                    _ => {}
                }
            }
            if row.status == RequestStatus::Completed {
                if let Some(closed) = row.closed_at {
                    let month = format!("{:04}-{:02}", closed.year(), closed.month());
                    let days = (closed - row.received_at).as_seconds_f64() / 86_400.0;
                    completions.entry(month).or_default().push(days);
                }
            }
        }
    }
    for (name, entry) in &mut stats.cleaners {
        entry.success_rate = if entry.attempts == 0 {
            0.0
        } else {
            entry.succeeded as f64 / entry.attempts as f64
        };
        if let Some(values) = latencies.get_mut(name) {
            values.sort_by(f64::total_cmp);
            entry.p50_seconds = quantile(values, 0.5);
            entry.p95_seconds = quantile(values, 0.95);
        }
    }
    for (month, mut values) in completions {
        values.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        stats.completion.insert(
            month,
            CompletionStats {
                completed: values.len() as u64,
                median_days: quantile(&values, 0.5),
                mean_days: mean,
            },
        );
    }
    Ok(stats)
}
