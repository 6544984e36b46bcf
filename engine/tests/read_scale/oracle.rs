//! The figures as they were computed before the counters (ADR 37): a pass over every row of
//! the projection. Durations are kept as they are; the counters' figures are these, rounded to
//! 4 significant digits of microseconds (`tallies::bucket`).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeDelta};
use lethe_domain::RequestStatus;
use lethe_engine::root::Database;
use lethe_projections::requests::{days_left, RequestRow};

/// One jurisdiction's year: received, whole, part, denied, cancelled, open; the median and
/// mean days to respond.
pub type Year = ([u64; 6], Option<f64>, Option<f64>);

#[derive(Debug, Default, PartialEq)]
pub struct Figures {
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    pub at_risk: u64,
    pub overdue: u64,
    /// Per cleaner: attempts, succeeded, exhausted, skipped.
    pub cleaners: BTreeMap<String, [u64; 4]>,
    /// Per cleaner: its p50 and p95 time to erase.
    pub latency: BTreeMap<String, (TimeDelta, TimeDelta)>,
    /// Per month: completed, the median time to complete, the mean in days.
    pub completion: BTreeMap<String, (u64, TimeDelta, f64)>,
    /// Per (year, jurisdiction).
    pub annual: BTreeMap<(i32, String), Year>,
}

pub async fn rows(database: &Database) -> Vec<RequestRow> {
    crate::support::projection::all_rows(database, 1000).await
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn at_quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

#[allow(clippy::cast_precision_loss)]
pub fn figures(rows: &[RequestRow], at_risk_days: u32, today: NaiveDate) -> Figures {
    let mut figures = Figures::default();
    let mut latencies: BTreeMap<String, Vec<TimeDelta>> = BTreeMap::new();
    let mut completions: BTreeMap<String, Vec<TimeDelta>> = BTreeMap::new();
    let mut days: BTreeMap<(i32, String), Vec<i64>> = BTreeMap::new();
    for row in rows {
        figures.total += 1;
        *figures.by_status.entry(row.status.to_string()).or_default() += 1;
        let left = days_left(row.deadline, today);
        if row.is_open() && left < 0 {
            figures.overdue += 1;
        } else if row.is_open() && left <= i64::from(at_risk_days) {
            figures.at_risk += 1;
        }
        for cleaner in &row.cleaners {
            let entry = figures.cleaners.entry(cleaner.name.clone()).or_default();
            entry[0] += u64::from(cleaner.attempts);
            match cleaner.status.as_str() {
                "succeeded" => {
                    entry[1] += 1;
                    if let Some(done) = cleaner.finished_at {
                        let took = (done - cleaner.started_at).max(TimeDelta::zero());
                        latencies
                            .entry(cleaner.name.clone())
                            .or_default()
                            .push(took);
                    }
                }
                "exhausted" => entry[2] += 1,
                "skipped" => entry[3] += 1,
                _ => {}
            }
        }
        if let (RequestStatus::Completed, Some(closed)) = (row.status, row.closed_at) {
            let month = format!("{:04}-{:02}", closed.year(), closed.month());
            completions
                .entry(month)
                .or_default()
                .push(closed - row.received_at);
        }
        annual(&mut figures, &mut days, row);
    }
    for (name, mut values) in latencies {
        values.sort();
        figures.latency.insert(
            name,
            (at_quantile(&values, 0.5), at_quantile(&values, 0.95)),
        );
    }
    for (month, mut values) in completions {
        values.sort();
        let mean = values
            .iter()
            .map(|d| d.as_seconds_f64() / 86_400.0)
            .sum::<f64>()
            / values.len() as f64;
        let entry = (values.len() as u64, at_quantile(&values, 0.5), mean);
        figures.completion.insert(month, entry);
    }
    for (key, mut values) in days {
        let entry = figures.annual.get_mut(&key).unwrap();
        if values.is_empty() {
            continue;
        }
        values.sort_unstable();
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2] as f64
        } else {
            (values[n / 2 - 1] + values[n / 2]) as f64 / 2.0
        };
        let mean = values.iter().sum::<i64>() as f64 / n as f64;
        entry.1 = Some(median);
        entry.2 = Some((mean * 100.0).round() / 100.0);
    }
    figures
}

fn annual(figures: &mut Figures, days: &mut BTreeMap<(i32, String), Vec<i64>>, row: &RequestRow) {
    let key = (row.received_at.year(), row.jurisdiction.clone());
    let entry = figures.annual.entry(key.clone()).or_default();
    entry.0[0] += 1;
    let responded = match row.status {
        RequestStatus::Completed => {
            let part = row.cleaners.iter().any(|c| c.status == "skipped");
            entry.0[if part { 2 } else { 1 }] += 1;
            true
        }
        RequestStatus::Rejected => {
            entry.0[3] += 1;
            true
        }
        RequestStatus::Cancelled => {
            entry.0[4] += 1;
            false
        }
        _ => {
            entry.0[5] += 1;
            false
        }
    };
    let list = days.entry(key).or_default();
    if let (true, Some(closed)) = (responded, row.closed_at) {
        list.push((closed.date_naive() - row.received_at.date_naive()).num_days());
    }
}
