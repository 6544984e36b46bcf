//! Queries over the projections: the request list (`GET /v1/requests`) and the dashboard
//! figures (`GET /v1/stats`).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use lethe_domain::{RequestId, RequestStatus};
use lethe_projections::requests::{days_left, RequestRow};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, RequestsRead};
use super::problem::Problem;
use super::AppState;
use crate::projections::{ProjectionStore, RequestFilter};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
const PAGE: u32 = 1000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only requests in this status.
    #[param(schema_with = super::schema::status)]
    status: Option<String>,
    /// Only requests of this jurisdiction.
    #[param(schema_with = super::schema::query_text)]
    jurisdiction: Option<String>,
    /// Only open requests whose deadline is at most `[policy] at_risk_days` away.
    at_risk: Option<bool>,
    /// Only open requests past their deadline.
    overdue: Option<bool>,
    needs_attention: Option<bool>,
    /// Received at or after (RFC 3339 time or a date).
    #[param(schema_with = super::schema::time_or_date)]
    received_from: Option<String>,
    /// Received before (RFC 3339 time or a date).
    #[param(schema_with = super::schema::time_or_date)]
    received_to: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(schema_with = super::schema::request_id)]
    cursor: Option<String>,
    /// At most 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListView {
    pub items: Vec<ListItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListItem {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub row: RequestRow,
    /// Days until the deadline (negative when overdue).
    pub days_left: i64,
}

fn projections(state: &AppState) -> Result<&std::sync::Arc<dyn ProjectionStore>, Problem> {
    state.requests.projections().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:lethe:problem:unavailable",
            "Service unavailable",
            "this instance serves no projections",
        )
    })
}

fn time(field: &str, text: &str) -> Result<DateTime<Utc>, Problem> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| Problem::invalid(field, "must be an RFC 3339 time or a date (YYYY-MM-DD)"))
}

fn filter_of(state: &AppState, query: &ListQuery) -> Result<RequestFilter, Problem> {
    Ok(RequestFilter {
        status: query
            .status
            .as_deref()
            .map(|s| {
                s.parse::<RequestStatus>()
                    .map_err(|e| Problem::invalid("status", e))
            })
            .transpose()?,
        jurisdiction: query.jurisdiction.clone(),
        at_risk: query.at_risk.unwrap_or(false),
        overdue: query.overdue.unwrap_or(false),
        needs_attention: query.needs_attention.unwrap_or(false),
        received_from: query
            .received_from
            .as_deref()
            .map(|t| time("received_from", t))
            .transpose()?,
        received_to: query
            .received_to
            .as_deref()
            .map(|t| time("received_to", t))
            .transpose()?,
        today: None,
        at_risk_days: i64::from(state.requests.config().policy.at_risk_days),
    })
}

#[utoipa::path(
    get,
    path = "/v1/requests",
    tag = "requests",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of requests in order of receipt", body = ListView),
        (status = 400, description = "Invalid filter, the field named", body = Problem, content_type = "application/problem+json"),
        super::responses::Guarded,
        super::responses::Stored,
    ),
    security(("bearer" = ["requests:read"]))
)]
pub async fn list(
    State(state): State<AppState>,
    _: Caller<RequestsRead>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListView>, Problem> {
    let Query(query) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let filter = filter_of(&state, &query)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Problem::invalid("limit", format!("must be 1-{MAX_LIMIT}")));
    }
    let after = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<RequestId>()
                .map_err(|_| Problem::invalid("cursor", "is not a cursor from this API"))
        })
        .transpose()?;
    // One more than asked tells whether another page exists.
    let mut rows = projections(&state)?
        .list_requests(&filter, after, limit + 1)
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let today = Utc::now().date_naive();
    let next_cursor = if more {
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(ListView {
        items: rows
            .into_iter()
            .map(|row| ListItem {
                days_left: days_left(row.deadline, today),
                row,
            })
            .collect(),
        next_cursor,
    }))
}

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
) -> Result<StatsView, crate::store::StoreError> {
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

#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "requests",
    responses(
        (status = 200, description = "Dashboard figures", body = StatsView),
        super::responses::Guarded,
        super::responses::Stored,
    ),
    security(("bearer" = ["requests:read"]))
)]
pub async fn stats(
    State(state): State<AppState>,
    _: Caller<RequestsRead>,
) -> Result<Json<StatsView>, Problem> {
    let store = projections(&state)?;
    let stats = compute_stats(
        &**store,
        state.requests.config().policy.at_risk_days,
        Utc::now().date_naive(),
    )
    .await?;
    Ok(Json(stats))
}
