//! A cleaner's own post to `POST /v1/requests/{id}/cleaners/{name}/result`: the result of an
//! attempt it accepted (an event), or progress on it (a heartbeat that moves the attempt's
//! deadline, kept as the latest value; ADR 36). Only the cleaner's own token may post.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use lethe_domain::CleanerName;
use serde::Deserialize;
use utoipa::openapi::schema::{OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};

use super::admin::{cleaner_name, metadata};
use super::json::{parse, RawBody};
use super::problem::Problem;
use super::{auth, request_id, AppState};
use crate::app::progress::{Progress, ProgressError};
use crate::app::views::RequestView;
use crate::app::CleanerReport;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultOutcome {
    Succeeded,
    Failed,
}

/// The result of an attempt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultBody {
    /// The attempt this result is for: the `attempt` of the call being answered.
    #[serde(deserialize_with = "super::whole::number")]
    #[schema(minimum = 1, maximum = 4_294_967_295_u64)]
    attempt: u32,
    outcome: ResultOutcome,
    /// Whether a failure may be retried; absent: it may.
    retryable: Option<bool>,
    /// What happened, in a few words; only its first 1024 characters are kept.
    detail: Option<String>,
    /// How many records of each kind were deleted.
    #[serde(default, deserialize_with = "super::whole::counts")]
    #[schema(schema_with = super::schema::counts)]
    deleted: Option<BTreeMap<String, u64>>,
}

/// Progress on an attempt whose result is awaited: moves its deadline to a whole
/// `callback_timeout` from now.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    /// The attempt being worked on: the `attempt` of the call that was accepted.
    #[serde(deserialize_with = "super::whole::number")]
    #[schema(minimum = 1, maximum = 4_294_967_295_u64)]
    attempt: u32,
    progress: ProgressCounts,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressCounts {
    /// Items done so far.
    #[serde(deserialize_with = "super::whole::number")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    done: u64,
    /// Items in all, when known; at least `done`.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    total: Option<u64>,
}

/// What a cleaner posts: a [`ResultBody`] or a [`ProgressBody`] (told apart by `progress`).
#[derive(Debug)]
pub struct ResultPost;

impl utoipa::PartialSchema for ResultPost {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name("ResultBody"))
            .item(Ref::from_schema_name("ProgressBody"))
            .into()
    }
}

impl utoipa::ToSchema for ResultPost {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use utoipa::PartialSchema as _;
        schemas.extend([
            ("ResultBody".to_owned(), ResultBody::schema()),
            ("ResultOutcome".to_owned(), ResultOutcome::schema()),
            ("ProgressBody".to_owned(), ProgressBody::schema()),
            ("ProgressCounts".to_owned(), ProgressCounts::schema()),
        ]);
    }
}

/// The cleaner named in the path, when the caller holds its `cleaner:<name>` scope: only the
/// cleaner's own token may report its results. Checked before the body is read.
#[derive(Debug)]
pub struct CleanerCaller(CleanerName);

impl axum::extract::FromRequestParts<AppState> for CleanerCaller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path((_, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::invalid("name", e.body_text()))?;
        let cleaner = cleaner_name(&name)?;
        auth::require(
            state.requests.config(),
            &parts.headers,
            &format!("cleaner:{cleaner}"),
        )?;
        Ok(Self(cleaner))
    }
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/cleaners/{name}/result",
    tag = "operations",
    params(super::schema::CleanerPath, super::schema::IdempotencyKey),
    request_body(content = ResultPost, description = "The attempt's result (an event), or, with `progress`, how far the cleaner has come (a heartbeat: the attempt's deadline moves to a whole `callback_timeout` from now; only the latest report is kept). Progress is answered 409 when no result of that attempt is awaited (it came, its deadline passed, or the attempt was never made); 422 when `progress.done` is more than `progress.total`."),
    responses(
        (status = 200, description = "The result or the progress is recorded", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["cleaner:{name}"]))
)]
pub async fn cleaner_result(
    State(state): State<AppState>,
    CleanerCaller(cleaner): CleanerCaller,
    Path((id, _name)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let top: serde_json::Map<String, serde_json::Value> = parse(&bytes)?;
    if top.contains_key("progress") {
        let body: ProgressBody = parse(&bytes)?;
        return progress(&state, id, &cleaner, body).await;
    }
    let body: ResultBody = parse(&bytes)?;
    let actor = format!("cleaner:{cleaner}");
    let metadata = metadata(
        &headers,
        &actor,
        &format!("result:{cleaner}:{}", body.attempt),
        id,
    )?;
    if body.attempt == 0 {
        return Err(Problem::invalid("attempt", "must be at least 1"));
    }
    // Redacted and cut to length when recorded.
    let report = match body.outcome {
        ResultOutcome::Succeeded => CleanerReport::Succeeded {
            deleted: body.deleted,
            detail: body.detail,
        },
        ResultOutcome::Failed => CleanerReport::Failed {
            error: body
                .detail
                .unwrap_or_else(|| "the cleaner reported a failure".to_owned()),
            retryable: body.retryable.unwrap_or(true),
        },
    };
    let done = state
        .requests
        .record_result(id, &metadata, &cleaner, body.attempt, report)
        .await?;
    Ok(Json(RequestView::new(&done)))
}

async fn progress(
    state: &AppState,
    id: lethe_domain::RequestId,
    cleaner: &CleanerName,
    body: ProgressBody,
) -> Result<Json<RequestView>, Problem> {
    if body.attempt == 0 {
        return Err(Problem::invalid("attempt", "must be at least 1"));
    }
    let progress = Progress::new(body.progress.done, body.progress.total).map_err(|error| {
        let mut problem = Problem::invalid(error.field(), error.to_string());
        // Well-formed counts that contradict each other: 422, not 400.
        if matches!(error, ProgressError::DonePastTotal { .. }) {
            problem.status = StatusCode::UNPROCESSABLE_ENTITY.as_u16();
        }
        problem
    })?;
    let view = state
        .requests
        .record_progress(id, cleaner, body.attempt, progress)
        .await?;
    Ok(Json(view))
}
