//! The figures of the `requests` projection kept as counters beside its rows (ADR 37), so that
//! the stats, the dashboard and the annual report read a few counters instead of every row.
//!
//! A row contributes to a set of counters ([`contributions`]); when a batch changes rows, the
//! counters move by what the new rows contribute minus what the old ones did ([`Tallies`]),
//! in the transaction that writes the rows. Each counter holds a count and a sum.
//!
//! Durations (a cleaner's time from `Due` to success, a request's time from receipt to
//! completion) are counted in buckets: microseconds rounded to [`SIGNIFICANT_DIGITS`]
//! significant digits ([`bucket`]). Rounding keeps order, so the median or p95 read from the
//! buckets is exactly the rounded value of the one read from every duration.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use lethe_domain::RequestStatus;

use crate::requests::RequestRow;

/// Requests by status; key: the status.
pub const STATUS: &str = "status";
/// A cleaner's planned requests (count) and attempts made (sum); key: the cleaner.
pub const CLEANER_ATTEMPTS: &str = "cleaner_attempts";
/// Requests on which a cleaner succeeded, ran out of attempts, was skipped; key: the cleaner.
pub const CLEANER_SUCCEEDED: &str = "cleaner_succeeded";
pub const CLEANER_EXHAUSTED: &str = "cleaner_exhausted";
pub const CLEANER_SKIPPED: &str = "cleaner_skipped";
/// A cleaner's successes by time from `Due` to success; key: the cleaner, bucket: [`bucket`].
pub const CLEANER_LATENCY: &str = "cleaner_latency";
/// Completed requests by time from receipt to completion; key: the month of completion
/// (`YYYY-MM`), bucket: [`bucket`], sum: the exact microseconds.
pub const COMPLETION: &str = "completion";

pub const ANNUAL_RECEIVED: i64 = 0;
pub const ANNUAL_WHOLE: i64 = 1;
pub const ANNUAL_PART: i64 = 2;
pub const ANNUAL_DENIED: i64 = 3;
pub const ANNUAL_CANCELLED: i64 = 4;
pub const ANNUAL_OPEN: i64 = 5;

/// The significant digits a duration keeps: at most 0.05 % off (half a step at 1.000).
pub const SIGNIFICANT_DIGITS: u32 = 4;

/// A counter's name: what it counts, of what, in which bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TallyKey {
    pub figure: String,
    pub key: String,
    pub bucket: i64,
}

/// A counter's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: i64,
    pub sum: i64,
}

/// `micros` rounded (half up) to [`SIGNIFICANT_DIGITS`] significant digits; negative values
/// count as 0. Monotone: `a <= b` implies `bucket(a) <= bucket(b)`.
pub fn bucket(micros: i64) -> i64 {
    let value = micros.max(0);
    let digits = value.checked_ilog10().map_or(1, |d| d + 1);
    if digits <= SIGNIFICANT_DIGITS {
        return value;
    }
    let step = 10_i64.pow(digits - SIGNIFICANT_DIGITS);
    (value / step + i64::from(value % step >= step / 2)) * step
}

/// Microseconds from `from` to `to` (0 when `to` is earlier).
pub fn micros_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX).max(0)
}

/// The annual report's classes of the requests received in `year`; key: the jurisdiction,
/// bucket: one of the `ANNUAL_*` classes.
pub fn annual(year: i32) -> String {
    format!("annual/{year:04}")
}

/// The annual report's calendar days to respond of the requests received in `year`; key: the
/// jurisdiction, bucket: the days, sum: the days.
pub fn annual_days(year: i32) -> String {
    format!("annual_days/{year:04}")
}

/// The counters one row adds to, with what it adds.
pub fn contributions(row: &RequestRow) -> Vec<(TallyKey, Tally)> {
    let mut out = Vec::with_capacity(4 + 3 * row.cleaners.len());
    let mut push = |figure: &str, key: &str, bucket, sum| {
        out.push((
            TallyKey {
                figure: figure.to_owned(),
                key: key.to_owned(),
                bucket,
            },
            Tally { count: 1, sum },
        ));
    };
    push(STATUS, row.status.as_str(), 0, 0);
    for cleaner in &row.cleaners {
        push(
            CLEANER_ATTEMPTS,
            &cleaner.name,
            0,
            i64::from(cleaner.attempts),
        );
        match cleaner.status.as_str() {
            "succeeded" => {
                push(CLEANER_SUCCEEDED, &cleaner.name, 0, 0);
                if let Some(done) = cleaner.finished_at {
                    let micros = micros_between(cleaner.started_at, done);
                    push(CLEANER_LATENCY, &cleaner.name, bucket(micros), micros);
                }
            }
            "exhausted" => push(CLEANER_EXHAUSTED, &cleaner.name, 0, 0),
            "skipped" => push(CLEANER_SKIPPED, &cleaner.name, 0, 0),
            _ => {}
        }
    }
    if let (RequestStatus::Completed, Some(closed)) = (row.status, row.closed_at) {
        let month = format!("{:04}-{:02}", closed.year(), closed.month());
        let micros = micros_between(row.received_at, closed);
        push(COMPLETION, &month, bucket(micros), micros);
    }
    let year = row.received_at.year();
    push(&annual(year), &row.jurisdiction, ANNUAL_RECEIVED, 0);
    let (class, responded) = match row.status {
        RequestStatus::Completed if row.cleaners.iter().any(|c| c.status == "skipped") => {
            (ANNUAL_PART, true)
        }
        RequestStatus::Completed => (ANNUAL_WHOLE, true),
        RequestStatus::Rejected => (ANNUAL_DENIED, true),
        RequestStatus::Cancelled => (ANNUAL_CANCELLED, false),
        _ => (ANNUAL_OPEN, false),
    };
    push(&annual(year), &row.jurisdiction, class, 0);
    if let (true, Some(closed)) = (responded, row.closed_at) {
        let days = (closed.date_naive() - row.received_at.date_naive()).num_days();
        push(&annual_days(year), &row.jurisdiction, days, days);
    }
    out
}

/// How a batch moves the counters: what the rows after it contribute minus what they did
/// before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies(BTreeMap<TallyKey, Tally>);

impl Tallies {
    /// Adds what `row` contributes.
    pub fn add(&mut self, row: &RequestRow) {
        self.apply(row, 1);
    }

    /// Takes away what `row` contributed.
    pub fn remove(&mut self, row: &RequestRow) {
        self.apply(row, -1);
    }

    fn apply(&mut self, row: &RequestRow, sign: i64) {
        for (key, tally) in contributions(row) {
            let entry = self.0.entry(key).or_default();
            entry.count += sign * tally.count;
            entry.sum += sign * tally.sum;
        }
    }

    /// The counters that move, with how much.
    pub fn changes(&self) -> impl Iterator<Item = (&TallyKey, &Tally)> {
        self.0.iter().filter(|(_, t)| **t != Tally::default())
    }
}

/// The value at quantile `q` of a histogram (`(bucket, count)` in bucket order), chosen as the
/// stats choose it from sorted values: the one at rank `round(q × (n − 1))`.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // counts far below 2^52
pub fn quantile(histogram: &[(i64, i64)], q: f64) -> Option<i64> {
    let n: i64 = histogram.iter().map(|(_, count)| count).sum();
    if n <= 0 {
        return None;
    }
    let rank = (q * (n - 1) as f64).round() as i64;
    at_rank(histogram, rank.min(n - 1))
}

/// The value at 0-based `rank` of a histogram in bucket order.
pub fn at_rank(histogram: &[(i64, i64)], rank: i64) -> Option<i64> {
    let mut seen = 0;
    for (value, count) in histogram {
        seen += count;
        if seen > rank {
            return Some(*value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_four_digits_and_order() {
        assert_eq!(bucket(-5), 0);
        assert_eq!(bucket(9_999), 9_999);
        assert_eq!(bucket(12_345), 12_350);
        assert_eq!(bucket(12_344), 12_340);
        assert_eq!(bucket(99_995), 100_000);
        assert_eq!(bucket(2_592_000_123_456), 2_592_000_000_000);
        let mut last = 0;
        for v in (0..2_000_000).step_by(7) {
            let b = bucket(v);
            assert!(b >= last, "monotone at {v}");
            assert!((b - v).abs() * 2_000 <= v.max(1), "within 0.05 % at {v}");
            last = b;
        }
    }

    #[test]
    fn quantiles_of_a_histogram_are_those_of_the_sorted_values() {
        let values = [3, 3, 5, 8, 8, 8, 13, 21];
        let histogram = [(3, 2), (5, 1), (8, 3), (13, 1), (21, 1)];
        for q in [0.0, 0.25, 0.5, 0.95, 1.0] {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let rank = (q * (values.len() - 1) as f64).round() as usize;
            assert_eq!(quantile(&histogram, q), Some(values[rank]));
        }
        assert_eq!(quantile(&[], 0.5), None);
    }
}
