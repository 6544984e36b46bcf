//! The annual report (`lethe report`, `GET /v1/reports/annual`, a section of the dashboard):
//! per jurisdiction, the requests received in a calendar year and what came of them, the
//! figures the CCPA regulations ask a business to disclose. Each figure is defined from the
//! events (docs/AUDIT.md, "The annual report"), and read from the `requests` projection, the
//! fold of those events, page by page.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::error::InvalidInput;
use lethe_domain::{Jurisdiction, RequestStatus};
use serde::Serialize;

use super::queries::RequestRow;
use super::{RequestError, Requests};
use crate::projections::{ProjectionStore, RequestFilter};
use crate::store::StoreError;

/// Rows read at once.
const PAGE: u32 = 1000;

/// The years a report may be asked for.
pub const YEARS: std::ops::RangeInclusive<i32> = 1970..=9998;

/// The annual report of one calendar year (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AnnualReport {
    pub year: i32,
    /// One entry per jurisdiction that received a request in the year (or the one asked for),
    /// by name.
    pub jurisdictions: Vec<JurisdictionFigures>,
}

/// One jurisdiction's figures for the year.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JurisdictionFigures {
    pub jurisdiction: String,
    /// Requests whose `Received` event records a receipt in the year.
    pub received: u64,
    /// Of those, `Completed` with every planned cleaner succeeded.
    pub complied_in_whole: u64,
    /// `Completed` with at least one cleaner skipped (justified).
    pub complied_in_part: u64,
    /// `Rejected`.
    pub denied: u64,
    /// `Cancelled`: withdrawn during the grace period, never answered.
    pub cancelled: u64,
    /// Not closed yet when the report was made.
    pub open: u64,
    /// Calendar days (UTC) from the day of receipt to the day of the `Completed` or `Rejected`
    /// event, over the requests complied with or denied; absent when there are none.
    pub median_days_to_respond: Option<f64>,
    pub mean_days_to_respond: Option<f64>,
}

impl JurisdictionFigures {
    fn count(&mut self, row: &RequestRow, days: &mut Vec<i64>) {
        self.received += 1;
        let responded = match row.status {
            RequestStatus::Completed => {
                if row.cleaners.iter().any(|c| c.status == "skipped") {
                    self.complied_in_part += 1;
                } else {
                    self.complied_in_whole += 1;
                }
                true
            }
            RequestStatus::Rejected => {
                self.denied += 1;
                true
            }
            RequestStatus::Cancelled => {
                self.cancelled += 1;
                false
            }
            _ => {
                self.open += 1;
                false
            }
        };
        if let (true, Some(closed_at)) = (responded, row.closed_at) {
            days.push((closed_at.date_naive() - row.received_at.date_naive()).num_days());
        }
    }

    #[allow(clippy::cast_precision_loss)] // day counts far below 2^52
    fn days_to_respond(&mut self, mut days: Vec<i64>) {
        if days.is_empty() {
            return;
        }
        days.sort_unstable();
        let n = days.len();
        let median = if n % 2 == 1 {
            days[n / 2] as f64
        } else {
            (days[n / 2 - 1] + days[n / 2]) as f64 / 2.0
        };
        let mean = days.iter().sum::<i64>() as f64 / n as f64;
        self.median_days_to_respond = Some(median);
        self.mean_days_to_respond = Some((mean * 100.0).round() / 100.0);
    }
}

/// The first instant of `year` (UTC), if it is one chrono can hold.
fn start_of(year: i32) -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(year, 1, 1).map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// Computes the report of `year`, for one jurisdiction or all, reading the projection page by
/// page (a page and one list of day counts per jurisdiction in memory).
pub async fn compute_annual_report(
    store: &dyn ProjectionStore,
    year: i32,
    jurisdiction: Option<&Jurisdiction>,
) -> Result<AnnualReport, StoreError> {
    let filter = RequestFilter {
        jurisdiction: jurisdiction.map(ToString::to_string),
        received_from: start_of(year),
        received_to: start_of(year + 1),
        ..RequestFilter::default()
    };
    let mut figures: BTreeMap<String, (JurisdictionFigures, Vec<i64>)> = BTreeMap::new();
    if let Some(j) = jurisdiction {
        figures.insert(j.to_string(), Default::default());
    }
    let mut after = None;
    loop {
        let page = store.list_requests(&filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for row in page.iter().filter(|row| filter.accepts(row)) {
            let (entry, days) = figures.entry(row.jurisdiction.clone()).or_default();
            entry.count(row, days);
        }
    }
    Ok(AnnualReport {
        year,
        jurisdictions: figures
            .into_iter()
            .map(|(name, (mut entry, days))| {
                entry.jurisdiction = name;
                entry.days_to_respond(days);
                entry
            })
            .collect(),
    })
}

/// The columns of the report as CSV, one row per jurisdiction.
pub const CSV_HEADER: [&str; 10] = [
    "year",
    "jurisdiction",
    "received",
    "complied_in_whole",
    "complied_in_part",
    "denied",
    "cancelled",
    "open",
    "median_days_to_respond",
    "mean_days_to_respond",
];

impl AnnualReport {
    /// The report as CSV: a header, then one row per jurisdiction (an absent median or mean is
    /// an empty cell).
    pub fn to_csv(&self) -> Result<String, RequestError> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(CSV_HEADER)?;
        let number = |x: Option<f64>| x.map(|x| x.to_string()).unwrap_or_default();
        for j in &self.jurisdictions {
            writer.write_record([
                self.year.to_string(),
                j.jurisdiction.clone(),
                j.received.to_string(),
                j.complied_in_whole.to_string(),
                j.complied_in_part.to_string(),
                j.denied.to_string(),
                j.cancelled.to_string(),
                j.open.to_string(),
                number(j.median_days_to_respond),
                number(j.mean_days_to_respond),
            ])?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|e| RequestError::Output(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| RequestError::Output(e.to_string()))
    }
}

/// Checks a report's year and jurisdiction as given, naming the field that is wrong.
pub fn report_scope(
    year: i32,
    jurisdiction: Option<&str>,
) -> Result<Option<Jurisdiction>, InvalidInput> {
    if !YEARS.contains(&year) {
        return Err(InvalidInput::new(
            "year",
            format!("must be a year from {} to {}", YEARS.start(), YEARS.end()),
        ));
    }
    jurisdiction.map(Jurisdiction::parse).transpose()
}

impl Requests {
    /// The annual report of `year` ([`compute_annual_report`]), for one jurisdiction or all.
    pub async fn annual_report(
        &self,
        year: i32,
        jurisdiction: Option<&str>,
    ) -> Result<AnnualReport, RequestError> {
        let jurisdiction = report_scope(year, jurisdiction)?;
        let store = self.projections_or_refuse()?;
        Ok(compute_annual_report(store, year, jurisdiction.as_ref()).await?)
    }
}
