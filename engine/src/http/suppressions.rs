//! `POST /v1/suppressions:check` (scope `suppression:read`): whether identifiers belong to an
//! erased subject, for a service that imports data and must not bring a person back.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::auth::{Caller, SuppressionRead};
use super::json::JsonBody;
use super::problem::Problem;
use super::{schema, AppState};
use crate::app::suppression::SuppressionCheck;

/// The identifiers to look up.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"subject": {"email": "a@example.com"}}))]
pub struct CheckBody {
    #[schema(schema_with = schema::subject)]
    subject: BTreeMap<String, String>,
}

#[utoipa::path(
    post,
    path = "/v1/suppressions:check",
    tag = "suppression",
    request_body = CheckBody,
    responses(
        (status = 200, description = "Whether the identifiers match an erased subject's suppression entries in force, with each erased request's id and date", body = SuppressionCheck),
        (status = 404, description = "Suppression is not enabled (no `[suppression]` in lethe.toml)", body = Problem, content_type = "application/problem+json"),
        super::responses::Guarded,
        super::responses::Stored,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["suppression:read"]))
)]
pub async fn check(
    State(state): State<AppState>,
    _: Caller<SuppressionRead>,
    JsonBody(body): JsonBody<CheckBody>,
) -> Result<Json<SuppressionCheck>, Problem> {
    let now = crate::app::suppression::now();
    Ok(Json(
        state.requests.check_suppressions(body.subject, now).await?,
    ))
}
