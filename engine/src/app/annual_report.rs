//! The annual report (`lethe report`, `GET /v1/reports/annual`, a section of the dashboard):
//! per jurisdiction, the requests received in a calendar year and what came of them, the
//! figures the CCPA regulations ask a business to disclose. Each figure is defined from the
//! events (docs/AUDIT.md, "The annual report"), and read from the counters the `requests`
//! projection, the fold of those events, keeps per year and jurisdiction (ADR 37).

use std::collections::BTreeMap;

use lethe_domain::error::InvalidInput;
use lethe_domain::Jurisdiction;
use serde::Serialize;

use lethe_projections::tallies;

use super::{RequestError, Requests};
use crate::projections::ProjectionStore;
use crate::store::StoreError;

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
    /// Adds a counter of the year's classes (`tallies::ANNUAL_*`).
    fn count(&mut self, class: i64, n: u64) {
        let field = match class {
            tallies::ANNUAL_RECEIVED => &mut self.received,
            tallies::ANNUAL_WHOLE => &mut self.complied_in_whole,
            tallies::ANNUAL_PART => &mut self.complied_in_part,
            tallies::ANNUAL_DENIED => &mut self.denied,
            tallies::ANNUAL_CANCELLED => &mut self.cancelled,
            _ => &mut self.open,
        };
        *field += n;
    }

    /// The median and mean of the days to respond, from their histogram (`(days, requests)`).
    #[allow(clippy::cast_precision_loss)] // day counts far below 2^52
    fn days_to_respond(&mut self, mut days: Vec<(i64, i64)>) {
        days.sort_unstable();
        let n: i64 = days.iter().map(|(_, count)| count).sum();
        if n <= 0 {
            return;
        }
        let at = |rank| tallies::at_rank(&days, rank).unwrap_or(0);
        let median = if n % 2 == 1 {
            at(n / 2) as f64
        } else {
            (at(n / 2 - 1) + at(n / 2)) as f64 / 2.0
        };
        let sum: i64 = days.iter().map(|(d, count)| d * count).sum();
        let mean = sum as f64 / n as f64;
        self.median_days_to_respond = Some(median);
        self.mean_days_to_respond = Some((mean * 100.0).round() / 100.0);
    }
}

/// Computes the report of `year`, for one jurisdiction or all, from the counters the
/// projection keeps per year and jurisdiction (ADR 37).
pub async fn compute_annual_report(
    store: &dyn ProjectionStore,
    year: i32,
    jurisdiction: Option<&Jurisdiction>,
) -> Result<AnnualReport, StoreError> {
    let classes = tallies::annual(year);
    let counters = store
        .tallies(&[classes.clone(), tallies::annual_days(year)])
        .await?;
    let mut figures: BTreeMap<String, (JurisdictionFigures, Vec<(i64, i64)>)> = BTreeMap::new();
    if let Some(j) = jurisdiction {
        figures.insert(j.to_string(), Default::default());
    }
    for (key, tally) in counters {
        let wanted = jurisdiction.is_none_or(|j| j.as_str() == key.key);
        if !wanted || tally.count <= 0 {
            continue;
        }
        let (entry, days) = figures.entry(key.key).or_default();
        if key.figure == classes {
            entry.count(key.bucket, u64::try_from(tally.count).unwrap_or(0));
        } else {
            days.push((key.bucket, tally.count));
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
