//! What the dashboard page shows: the stats of `GET /v1/stats`, the overdue and at-risk
//! requests, most urgent first, the annual report of last year and of this year so far, and
//! the data inventory's gaps (`GET /v1/coverage`).

use chrono::{Datelike, NaiveDate};

use super::annual_report::{compute_annual_report, AnnualReport};
use super::coverage::CoverageView;
use super::queries::RequestRow;
use super::stats::{compute_stats, StatsView};
use super::{RequestError, Requests};
use crate::projections::ProjectionStore;
use crate::store::StoreError;

/// Rows shown in each of the overdue and at-risk lists.
pub const LIST_LIMIT: usize = 50;

/// What the page shows, read from the projections.
#[derive(Debug)]
pub struct Figures {
    pub stats: StatsView,
    /// Most urgent first, at most [`LIST_LIMIT`].
    pub overdue: Vec<RequestRow>,
    pub at_risk: Vec<RequestRow>,
    /// The annual reports of last year and of this year so far (`GET /v1/reports/annual`).
    pub reports: [AnnualReport; 2],
    pub today: NaiveDate,
    /// The declared stores and their gaps, from the configuration.
    pub coverage: CoverageView,
}

/// Reads the figures: the stats of `GET /v1/stats`, and the overdue and at-risk lists (the
/// first [`LIST_LIMIT`] of each in the order of the index of open deadlines).
pub async fn gather(
    store: &dyn ProjectionStore,
    at_risk_days: u32,
    today: NaiveDate,
) -> Result<Figures, StoreError> {
    let stats = compute_stats(store, at_risk_days, today).await?;
    let limit = u32::try_from(LIST_LIMIT).unwrap_or(u32::MAX);
    let overdue = store.most_urgent(None, Some(today), limit).await?;
    let until = today + chrono::TimeDelta::days(i64::from(at_risk_days) + 1);
    let at_risk = store.most_urgent(Some(today), Some(until), limit).await?;
    let reports = [
        compute_annual_report(store, today.year() - 1, None).await?,
        compute_annual_report(store, today.year(), None).await?,
    ];
    Ok(Figures {
        stats,
        overdue,
        at_risk,
        reports,
        today,
        coverage: CoverageView::default(),
    })
}

impl Requests {
    /// The dashboard's figures as of `today`.
    pub async fn dashboard(&self, today: NaiveDate) -> Result<Figures, RequestError> {
        let store = self.projections_or_refuse()?;
        let figures = gather(store, self.config().policy.at_risk_days, today).await?;
        Ok(Figures {
            coverage: self.coverage(),
            ..figures
        })
    }
}
