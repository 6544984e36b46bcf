//! Operations on one request after intake: the subject's cancel, an approval, an
//! administrator's reject, hold, release, extend, expedite, cleaner retry and skip, and a
//! cleaner's own result.
//! Each is one command of the application service ([`crate::app::Requests`]); the answer is
//! the request as it stands afterwards.

use axum::extract::FromRequest;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lethe_domain::{CleanerName, RequestId, Span};
use serde::Deserialize;

use super::auth::{Admin, Caller};
use super::json::{JsonBody, OptionalJsonBody};
use super::problem::Problem;
use super::schema::MAX_DETAIL_LEN;
use super::{auth, idempotency_key, request_id, AppState};

type AdminCaller = Caller<Admin>;
use crate::app::views::RequestView;
use crate::app::{text_field, EventMetadata, LoadedRequest, RequestError};

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[schema(schema_with = super::schema::optional_reason)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    #[schema(schema_with = super::schema::span)]
    by: String,
    #[schema(schema_with = super::schema::required_reason)]
    reason: String,
}

/// The query of a cancel; `/openapi.json` states `token` as the `cancel_token` scheme.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelQuery {
    /// The subject's cancel token (instead of an admin bearer token).
    token: Option<String>,
}

/// The command's metadata for an administrator authenticated by [`AdminCaller`].
fn authorized(
    caller: &AdminCaller,
    headers: &HeaderMap,
    operation: &str,
    id: RequestId,
) -> Result<EventMetadata, Problem> {
    metadata(headers, &caller.0.actor, operation, id)
}

pub(super) fn metadata(
    headers: &HeaderMap,
    actor: &str,
    operation: &str,
    id: RequestId,
) -> Result<EventMetadata, Problem> {
    let mut metadata = EventMetadata::new(actor);
    if let Some(key) = idempotency_key(headers)? {
        metadata.command_id = Some(format!("{operation}:{id}:{actor}:{key}"));
    }
    Ok(metadata)
}

/// The reason given, trimmed; checked as the text fields of a submission are (bounded, no
/// control characters), an empty one being none.
fn reason_of(
    OptionalJsonBody(body): OptionalJsonBody<ReasonBody>,
) -> Result<Option<String>, Problem> {
    Ok(text_field(
        "reason",
        body.and_then(|b| b.reason),
        MAX_DETAIL_LEN,
    )?)
}

fn required_reason(body: OptionalJsonBody<ReasonBody>) -> Result<String, Problem> {
    reason_of(body)?.ok_or_else(|| Problem::invalid("reason", "is required"))
}

pub(super) fn cleaner_name(raw: &str) -> Result<CleanerName, Problem> {
    CleanerName::parse(raw).map_err(|e| Problem::invalid("name", e.message))
}

/// The request as a command left it.
fn view(done: Result<LoadedRequest, RequestError>) -> Result<Json<RequestView>, Problem> {
    Ok(Json(RequestView::new(&done?)))
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/cancel",
    tag = "operations",
    params(super::schema::RequestPath, super::schema::IdempotencyKey),
    request_body(content = Option<ReasonBody>, description = "Optional: an empty body is no reason"),
    responses(
        (status = 200, description = "Cancelled (admin token, or the subject's `?token=`). A form post (`application/x-www-form-urlencoded`, the button of `GET /v1/requests/{id}/cancel`) is answered with an HTML page instead, its body ignored, with the same statuses.", content((RequestView = "application/json"), (String = "text/html"))),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]), ("cancel_token" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    canceller: Result<Canceller, Problem>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    let by_form = |c: &Canceller| metadata(&headers, &c.actor, "cancel", c.id);
    if super::cancel_page::is_form(&headers) {
        return Ok(super::cancel_page::cancel_by_form(&state, canceller, by_form).await);
    }
    let Canceller { id, actor } = canceller?;
    let metadata = metadata(&headers, &actor, "cancel", id)?;
    let body = OptionalJsonBody::<ReasonBody>::from_request(request, &state).await?;
    let reason = reason_of(body)?;
    Ok(view(state.requests.cancel(id, &metadata, reason).await)?.into_response())
}

/// Who may cancel: the subject with the request's `?token=`, or an administrator. Checked
/// from the request's parts, before the body is read.
#[derive(Debug)]
pub struct Canceller {
    pub(super) id: RequestId,
    pub(super) actor: String,
}

impl axum::extract::FromRequestParts<AppState> for Canceller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::invalid("id", e.body_text()))?;
        let id = request_id(&id)?;
        let Query(query) = Query::<CancelQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::invalid("query", e.body_text()))?;
        let actor = match &query.token {
            Some(token) => {
                // A token issued under a master key since rotated away is kept as a digest
                // while its request is in the grace period (ADR 15).
                if !state
                    .requests
                    .cancel_token_matches(&state.key, id, token)
                    .await?
                {
                    return Err(Problem::forbidden(
                        "the cancel token does not match this request",
                    ));
                }
                "subject".to_owned()
            }
            None => auth::require(state.requests.config(), &parts.headers, "admin")?.actor,
        };
        Ok(Self { id, actor })
    }
}

/// Who may approve: a token with `requests:approve`, or an administrator (`admin`).
#[derive(Debug)]
pub struct Approver(String);

impl axum::extract::FromRequestParts<AppState> for Approver {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let config = state.requests.config();
        match auth::require(config, &parts.headers, "requests:approve") {
            Ok(principal) => Ok(Self(principal.actor)),
            Err(problem) if problem.status == 403 => auth::require(config, &parts.headers, "admin")
                .map(|principal| Self(principal.actor))
                .map_err(|_| {
                    Problem::forbidden("this token lacks the scope requests:approve (or admin)")
                }),
            Err(problem) => Err(problem),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/approve",
    tag = "operations",
    params(super::schema::RequestPath, super::schema::IdempotencyKey),
    request_body(content = Option<ReasonBody>, description = "Optional: an empty body is no reason; a reason is recorded in the `Approved` event"),
    responses(
        (status = 200, description = "Approved: the grace period (and its reminders) start now; the legal deadline still counts from receipt", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["requests:approve"]), ("bearer" = ["admin"]))
)]
pub async fn approve(
    State(state): State<AppState>,
    Approver(actor): Approver,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: OptionalJsonBody<ReasonBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let metadata = metadata(&headers, &actor, "approve", id)?;
    let reason = reason_of(body)?;
    view(state.requests.approve(id, &metadata, reason).await)
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/suppression/lift",
    tag = "operations",
    params(super::schema::RequestPath, super::schema::IdempotencyKey),
    request_body = super::schema::RequiredReasonBody,
    responses(
        (status = 200, description = "The request's suppression lifted (`SuppressionLifted`, with the reason): its entries answer no more", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn lift_suppression(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: OptionalJsonBody<ReasonBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let metadata = authorized(&caller, &headers, "lift_suppression", id)?;
    let reason = required_reason(body)?;
    view(
        state
            .requests
            .lift_suppression(id, &reason, &metadata)
            .await,
    )
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/reject",
    tag = "operations",
    params(super::schema::RequestPath, super::schema::IdempotencyKey),
    request_body = super::schema::RequiredReasonBody,
    responses(
        (status = 200, description = "Rejected", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn reject(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: OptionalJsonBody<ReasonBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let metadata = authorized(&caller, &headers, "reject", id)?;
    let reason = required_reason(body)?;
    view(state.requests.reject(id, &metadata, reason).await)
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/hold",
    tag = "operations",
    params(super::schema::RequestPath, super::schema::IdempotencyKey),
    request_body = super::schema::RequiredReasonBody,
    responses(
        (status = 200, description = "On hold", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn hold(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: OptionalJsonBody<ReasonBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let metadata = authorized(&caller, &headers, "hold", id)?;
    let reason = required_reason(body)?;
    view(state.requests.hold(id, &metadata, reason).await)
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/release",
    tag = "operations",
    params(super::schema::RequestPath, super::schema::IdempotencyKey),
    request_body(content = Option<ReasonBody>, description = "Optional: an empty body is no reason"),
    responses(
        (status = 200, description = "Released", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn release(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: OptionalJsonBody<ReasonBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let metadata = authorized(&caller, &headers, "release", id)?;
    let reason = reason_of(body)?;
    view(state.requests.release(id, &metadata, reason).await)
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/extend",
    tag = "operations",
    params(super::schema::RequestPath, super::schema::IdempotencyKey),
    request_body = ExtendBody,
    responses(
        (status = 200, description = "Deadline extended", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn extend(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ExtendBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let metadata = authorized(&caller, &headers, "extend", id)?;
    let by: Span = body
        .by
        .parse()
        .map_err(|e: String| Problem::invalid("by", e))?;
    // A blank reason is left to the aggregate, which requires one (422).
    let reason = text_field("reason", Some(body.reason), MAX_DETAIL_LEN)?.unwrap_or_default();
    view(state.requests.extend(id, &metadata, by, reason).await)
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/expedite",
    tag = "operations",
    params(super::schema::RequestPath, super::schema::IdempotencyKey),
    request_body(content = Option<ReasonBody>, description = "Optional: an empty body is no reason; a reason is recorded in the `Due` event"),
    responses(
        (status = 200, description = "Due now", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn expedite(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: OptionalJsonBody<ReasonBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let metadata = authorized(&caller, &headers, "expedite", id)?;
    let reason = reason_of(body)?;
    view(state.requests.expedite(id, &metadata, reason).await)
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/cleaners/{name}/retry",
    tag = "operations",
    params(super::schema::CleanerPath, super::schema::IdempotencyKey),
    request_body(content = Option<ReasonBody>, description = "Optional: an empty body is no reason; a reason is recorded in the `CleanerRetried` event"),
    responses(
        (status = 200, description = "The exhausted cleaner gets another round", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn retry_cleaner(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJsonBody<ReasonBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let cleaner = cleaner_name(&name)?;
    let metadata = authorized(&caller, &headers, &format!("retry:{cleaner}"), id)?;
    let reason = reason_of(body)?;
    view(
        state
            .requests
            .retry_cleaner(id, &metadata, &cleaner, reason)
            .await,
    )
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/cleaners/{name}/skip",
    tag = "operations",
    params(super::schema::CleanerPath, super::schema::IdempotencyKey),
    request_body = super::schema::RequiredReasonBody,
    responses(
        (status = 200, description = "The cleaner is skipped", body = RequestView),
        super::responses::Command,
        super::responses::JsonBody,
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn skip_cleaner(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJsonBody<ReasonBody>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let cleaner = cleaner_name(&name)?;
    let metadata = authorized(&caller, &headers, &format!("skip:{cleaner}"), id)?;
    let reason = required_reason(body)?;
    view(
        state
            .requests
            .skip_cleaner(id, &metadata, &cleaner, reason)
            .await,
    )
}
