//! Queries over the projections: the request list (`GET /v1/requests`), the dashboard
//! figures (`GET /v1/stats`) and the annual report (`GET /v1/reports/annual`); and the data
//! inventory's coverage (`GET /v1/coverage`), read from the configuration.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::{RequestId, RequestStatus};
use lethe_projections::requests::days_left;
use serde::{Deserialize, Serialize};

use super::auth::{AuditRead, Caller, RequestsRead};
use super::problem::Problem;
use super::AppState;
use crate::app::annual_report::AnnualReport;
use crate::app::coverage::CoverageView;
use crate::app::queries::{ListFilter, RequestRow};
use crate::app::stats::StatsView;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

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
    /// Only requests with this cleaner planned that has not yet succeeded or been skipped
    /// (pending, failing, or out of attempts).
    #[param(schema_with = super::schema::cleaner_name)]
    cleaner: Option<String>,
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

fn filter_of(query: &ListQuery) -> Result<ListFilter, Problem> {
    Ok(ListFilter {
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
        cleaner: query
            .cleaner
            .as_deref()
            .map(|name| {
                lethe_domain::CleanerName::parse(name)
                    .map_err(|e| Problem::invalid("cleaner", e.message))
            })
            .transpose()?,
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
    })
}

/// A list query's filter, where its page starts and its size, checked as `GET /v1/requests`
/// checks them: a bad value is a 400 naming the field.
pub(super) fn checked(query: &ListQuery) -> Result<(ListFilter, Option<RequestId>, u32), Problem> {
    let filter = filter_of(query)?;
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
    Ok((filter, after, limit))
}

/// The list's filters an HTML form sends empty when unset (a select's "any", an empty text
/// field); an empty one is no filter.
pub(super) const FORM_FIELDS: [&str; 3] = ["status", "jurisdiction", "cleaner"];

/// A list query from an HTML form's query string: [`FORM_FIELDS`] left empty are absent, so a
/// form sent untouched lists everything. The same names and checks as `GET /v1/requests`.
pub(super) fn from_form(raw: Option<&str>) -> Result<ListQuery, Problem> {
    let kept: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .filter(|(name, value)| !(value.is_empty() && FORM_FIELDS.contains(&name.as_ref())))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&kept)
        .finish();
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| Problem::invalid("query", "is not a query string"))?;
    Query::<ListQuery>::try_from_uri(&uri)
        .map(|Query(query)| query)
        .map_err(|e| Problem::invalid("query", e.body_text()))
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
    let (filter, after, limit) = checked(&query)?;
    let page = state.requests.list(&filter, after, limit).await?;
    let today = Utc::now().date_naive();
    Ok(Json(ListView {
        items: page
            .rows
            .into_iter()
            .map(|row| ListItem {
                days_left: days_left(row.deadline, today),
                row,
            })
            .collect(),
        next_cursor: page.next_cursor.map(|id| id.to_string()),
    }))
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
    let stats = state.requests.stats(Utc::now().date_naive()).await?;
    Ok(Json(stats))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnnualQuery {
    /// The calendar year (UTC) in which the requests were received.
    #[param(minimum = 1970, maximum = 9998)]
    year: i32,
    /// Only this jurisdiction (listed even when it received nothing); every jurisdiction that
    /// received a request in the year when absent.
    #[param(schema_with = super::schema::report_jurisdiction)]
    jurisdiction: Option<String>,
    /// `json` (the default) or `csv` (a header and one row per jurisdiction).
    #[param(inline)]
    format: Option<ReportFormat>,
}

/// The representation of the annual report.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    Json,
    Csv,
}

#[utoipa::path(
    get,
    path = "/v1/reports/annual",
    tag = "audit",
    params(AnnualQuery),
    responses(
        (status = 200, description = "Per jurisdiction: requests received in the year, complied with in whole or in part, denied, cancelled, open, and the median and mean calendar days to respond (docs/AUDIT.md)",
            content(
                (AnnualReport = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, description = "Invalid year, jurisdiction or format, the field named", body = Problem, content_type = "application/problem+json"),
        super::responses::Guarded,
        super::responses::Stored,
    ),
    security(("bearer" = ["audit:read"]))
)]
pub async fn annual_report(
    State(state): State<AppState>,
    _: Caller<AuditRead>,
    query: Result<Query<AnnualQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let report = state
        .requests
        .annual_report(query.year, query.jurisdiction.as_deref())
        .await?;
    Ok(match query.format.unwrap_or(ReportFormat::Json) {
        ReportFormat::Json => Json(report).into_response(),
        ReportFormat::Csv => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report.to_csv()?,
        )
            .into_response(),
    })
}

#[utoipa::path(
    get,
    path = "/v1/coverage",
    tag = "requests",
    responses(
        (status = 200, description = "The declared stores (`[[stores]]`) and the gaps in their erasure: stores no cleaner erases, identifier kinds none of a store's cleaners receives, jurisdictions and sources none of them is routed", body = CoverageView),
        super::responses::Guarded,
    ),
    security(("bearer" = ["requests:read"]))
)]
pub async fn coverage(
    State(state): State<AppState>,
    _: Caller<RequestsRead>,
) -> Json<CoverageView> {
    Json(state.requests.coverage())
}
