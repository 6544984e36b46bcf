//! What the dashboard page shows: the stats of `GET /v1/stats`, the overdue and at-risk
//! requests, most urgent first, the annual report of last year and of this year so far, and
//! the data inventory's gaps (`GET /v1/coverage`).

use chrono::{Datelike, NaiveDate};

use super::annual_report::{compute_annual_report, AnnualReport};
use super::coverage::CoverageView;
use super::queries::RequestRow;
use super::stats::{compute_stats, StatsView};
use super::{RequestError, Requests};
use crate::projections::{ProjectionStore, RequestFilter};
use crate::store::StoreError;

/// Rows shown in each of the overdue and at-risk lists.
pub const LIST_LIMIT: usize = 50;
/// Rows read at once.
const PAGE: u32 = 500;

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

/// Reads the figures: the stats of `GET /v1/stats`, and the overdue and at-risk lists.
pub async fn gather(
    store: &dyn ProjectionStore,
    at_risk_days: u32,
    today: NaiveDate,
) -> Result<Figures, StoreError> {
    let stats = compute_stats(store, at_risk_days, today).await?;
    let filter = RequestFilter {
        today: Some(today),
        at_risk_days: i64::from(at_risk_days),
        ..RequestFilter::default()
    };
    let overdue = most_urgent(
        store,
        &RequestFilter {
            overdue: true,
            ..filter.clone()
        },
    )
    .await?;
    let at_risk = most_urgent(
        store,
        &RequestFilter {
            at_risk: true,
            ..filter
        },
    )
    .await?;
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

/// The [`LIST_LIMIT`] rows with the earliest deadlines, reading page by page (never more than
/// a page and the kept rows in memory).
async fn most_urgent(
    store: &dyn ProjectionStore,
    filter: &RequestFilter,
) -> Result<Vec<RequestRow>, StoreError> {
    let mut kept: Vec<RequestRow> = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_requests(filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        kept.extend(page.into_iter().filter(|row| filter.accepts(row)));
        kept.sort_by(|a, b| {
            (a.deadline, a.received_at, a.id).cmp(&(b.deadline, b.received_at, b.id))
        });
        kept.truncate(LIST_LIMIT);
    }
    Ok(kept)
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
