//! The HTTP API (axum). The router is built by [`router`] so tests can drive it with `oneshot`
//! and `lethe serve` can bind it to a socket.

mod admin;
pub mod auth;
mod bulk;
mod cancel_page;
mod cleaner_results;
pub mod dashboard;
pub mod edge;
pub mod events;
mod json;
mod problem;
pub mod queries;
mod receipts;
mod responses;
mod schema;
pub mod server;
mod suppressions;
mod whole;

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use lethe_domain::RequestId;
use serde::Deserialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use json::parse as parse_json;
pub use problem::Problem;
pub use server::serve;

use crate::app::replay::At;
use crate::app::views::{HistoryView, RequestView, SubmittedView};
use crate::app::{MasterKey, Requests, Submission};
use auth::Caller;
use json::JsonBody;

/// A request taking longer than this is answered 408.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

#[derive(Debug, Clone)]
pub struct AppState {
    pub requests: Requests,
    pub key: MasterKey,
}

/// The API description, assembled from the handlers' `#[utoipa::path]` annotations by the
/// same [`OpenApiRouter`] that routes requests to them, so the two cannot drift apart.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Lethe", description = "Erasure requests from intake to proof of deletion."),
    modifiers(&BearerAuth),
    components(schemas(Problem)),
    tags(
        (name = "requests", description = "Intake and the state of requests"),
        (name = "audit", description = "The auditor's replay"),
        (name = "operations", description = "Operations on one request"),
        (name = "suppression", description = "Whether identifiers belong to an erased subject"),
        (name = "service", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// Declares the schemes that `security(...)` refers to: bearer tokens, and the subject's
/// cancel token.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `lethe token create`; the scopes each operation needs are \
                         listed with it (requests:write, requests:read, requests:approve, \
                         audit:read, suppression:read, admin, cleaner:<name>).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cancel_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The subject's cancel token for one request (the `cancel_token` of its \
                 submission): `POST /v1/requests/{id}/cancel?token=...` needs no bearer token.",
            ))),
        );
    }
}

/// The routes and their OpenAPI description.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut openapi) = OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(submit, queries::list))
        .routes(routes!(queries::stats))
        .routes(routes!(queries::annual_report))
        .routes(routes!(queries::coverage))
        .routes(routes!(bulk::bulk))
        .routes(routes!(show))
        .routes(routes!(history))
        .routes(routes!(receipts::receipt))
        .routes(routes!(receipts::receipt_keys))
        .routes(routes!(admin::cancel, cancel_page::page))
        .routes(routes!(admin::approve))
        .routes(routes!(admin::reject))
        .routes(routes!(admin::hold))
        .routes(routes!(admin::release))
        .routes(routes!(admin::extend))
        .routes(routes!(admin::expedite))
        .routes(routes!(admin::retry_cleaner))
        .routes(routes!(admin::skip_cleaner))
        .routes(routes!(cleaner_results::cleaner_result))
        .routes(routes!(admin::lift_suppression))
        .routes(routes!(suppressions::check))
        .routes(routes!(healthz))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(dashboard::dashboard))
        .routes(routes!(dashboard::requests))
        .routes(routes!(dashboard::request))
        .routes(routes!(dashboard::act))
        .routes(routes!(events::feed))
        .split_for_parts();
    schema::refine(&mut openapi);
    (routes, openapi)
}

pub fn router(state: AppState) -> Router {
    crate::telemetry::metrics::install();
    let limits = std::sync::Arc::new(auth::RateLimits::new(&state.requests.config().api));
    let (routes, mut openapi) = api();
    schema::configured_jurisdictions(
        &mut openapi,
        state
            .requests
            .config()
            .jurisdictions
            .keys()
            .map(|j| j.as_str()),
    );
    let openapi = std::sync::Arc::new(openapi);
    routes
        .fallback(edge::not_found)
        .layer(axum::Extension(openapi))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            auth::rate_limit,
        ))
        .layer(axum::middleware::from_fn(
            crate::telemetry::metrics::track_http,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(
                    |request: &axum::http::Request<_>| {
                        let request_id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!(
                            "http",
                            method = %request.method(),
                            path = %request.uri().path(),
                            request.id = %request_id,
                        )
                    },
                ))
                .layer(PropagateRequestIdLayer::x_request_id())
                // Outside the time-out, so that its 408 becomes a problem too.
                .layer(axum::middleware::from_fn(edge::problems))
                .layer(axum::middleware::from_fn(edge::guard))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                )),
        )
        .with_state(state)
}

/// A new erasure request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"subject": {"user_id": "42", "email": "a@example.com"}, "jurisdiction": "gdpr"}))]
pub(crate) struct SubmitBody {
    #[schema(schema_with = schema::subject)]
    subject: BTreeMap<String, String>,
    #[schema(schema_with = schema::jurisdiction)]
    jurisdiction: Option<String>,
    #[schema(schema_with = schema::source)]
    source: Option<String>,
    #[schema(schema_with = schema::submission_reason)]
    reason: Option<String>,
    #[schema(schema_with = schema::external_id)]
    external_id: Option<String>,
    #[serde(default)]
    #[schema(schema_with = schema::tags)]
    tags: Vec<String>,
}

impl From<SubmitBody> for Submission {
    fn from(body: SubmitBody) -> Self {
        Self {
            subject: body.subject,
            jurisdiction: body.jurisdiction,
            source: body.source,
            reason: body.reason,
            external_id: body.external_id,
            tags: body.tags,
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            Problem::invalid(
                "Idempotency-Key",
                format!("must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    Ok(Some(key))
}

fn request_id(raw: &str) -> Result<RequestId, Problem> {
    raw.parse::<RequestId>().map_err(Problem::from)
}

#[utoipa::path(
    post,
    path = "/v1/requests",
    tag = "requests",
    request_body = SubmitBody,
    params(schema::IdempotencyKey),
    responses(
        (status = 201, description = "Received", body = SubmittedView, headers(("Location" = String, description = "The request's URL"))),
        (status = 200, description = "Seen before (same Idempotency-Key or external_id): the first request", body = SubmittedView, headers(("Location" = String, description = "The request's URL"))),
        responses::Guarded,
        responses::Stored,
        responses::JsonBody,
        (status = 409, description = "The submission kept conflicting with another (try again)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["requests:write"]))
)]
async fn submit(
    State(state): State<AppState>,
    Caller(principal, _): Caller<auth::RequestsWrite>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let submission = Submission::from(body);
    let submitted = state
        .requests
        .submit(submission, key, &principal.actor)
        .await?;
    let request = &submitted.loaded.request;
    let view = SubmittedView::new(request, state.requests.cancel_token(&state.key, request.id));
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/requests/{}", request.id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/requests/{id}",
    tag = "requests",
    params(schema::RequestPath, ShowQuery),
    responses(
        (status = 200, description = "The request's current state, or its state at `at`", body = RequestView),
        responses::OneRequest,
    ),
    security(("bearer" = ["requests:read"]))
)]
async fn show(
    State(state): State<AppState>,
    _: Caller<auth::RequestsRead>,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Json<RequestView>, Problem> {
    let id = request_id(&id)?;
    let Query(query) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let view = match query.at.as_deref() {
        None => state.requests.show(id).await?,
        Some(at) => state.requests.show_at(id, At::parse("at", at)?).await?,
    };
    Ok(Json(view))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// The request as it was at this point of its history: a log position (every event at or
    /// before it), an RFC 3339 time or a date (every event recorded by then). 404 when the
    /// request had not been received by then.
    #[param(schema_with = schema::position_time_or_date)]
    at: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// With `true`, every entry also carries `state_after`: the whole request as it was after
    /// its event.
    states: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/v1/requests/{id}/history",
    tag = "audit",
    params(schema::RequestPath, HistoryQuery),
    responses(
        (status = 200, description = "Every event, the status (or, with `states`, the whole request) after it, and the hash-chain verdict", body = HistoryView),
        responses::OneRequest,
    ),
    security(("bearer" = ["audit:read"]))
)]
async fn history(
    State(state): State<AppState>,
    _: Caller<auth::AuditRead>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryView>, Problem> {
    let id = request_id(&id)?;
    let Query(query) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let states = query.states.unwrap_or(false);
    Ok(Json(state.requests.history(id, states).await?))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        responses::Service,
    )
)]
async fn metrics() -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics::render(),
    )
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "The database is reachable and migrated", body = String, content_type = "text/plain"),
        responses::Service,
        responses::Stored,
        (status = 503, description = "The database did not answer within `[database] ready_timeout` (see Retry-After)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<&'static str, Problem> {
    state.requests.ready().await?;
    Ok("ready")
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses(
        (status = 200, description = "The process is up", body = String, content_type = "text/plain"),
        responses::Service,
    )
)]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses(
        (status = 200, description = "This OpenAPI 3 document", body = Object),
        responses::Service,
    )
)]
async fn openapi_json(
    axum::Extension(openapi): axum::Extension<std::sync::Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*openapi).clone())
}
