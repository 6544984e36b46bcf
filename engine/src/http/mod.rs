//! The HTTP API (axum). The router is built by [`router`] so tests can drive it with `oneshot`
//! and `lethe serve` can bind it to a socket.

mod admin;
pub mod auth;
mod bulk;
mod json;
mod problem;

use std::collections::BTreeMap;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lethe_domain::RequestId;
use serde::Deserialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use json::parse as parse_json;
pub use problem::Problem;

use crate::requests::{Requests, Submission};
use crate::secrets::MasterKey;
use crate::views::{HistoryView, RequestView, SubmittedView};
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

pub fn router(state: AppState) -> Router {
    crate::metrics::install();
    let limits = std::sync::Arc::new(auth::RateLimits::new(&state.requests.config().api));
    Router::new()
        .route("/v1/requests", post(submit))
        .route(
            "/v1/requests:bulk",
            post(bulk::bulk).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/history", get(history))
        .route("/v1/requests/{id}/cancel", post(admin::cancel))
        .route("/v1/requests/{id}/reject", post(admin::reject))
        .route("/v1/requests/{id}/hold", post(admin::hold))
        .route("/v1/requests/{id}/release", post(admin::release))
        .route("/v1/requests/{id}/extend", post(admin::extend))
        .route("/v1/requests/{id}/expedite", post(admin::expedite))
        .route(
            "/v1/requests/{id}/cleaners/{name}/retry",
            post(admin::retry_cleaner),
        )
        .route(
            "/v1/requests/{id}/cleaners/{name}/skip",
            post(admin::skip_cleaner),
        )
        .route(
            "/v1/requests/{id}/cleaners/{name}/result",
            post(admin::cleaner_result),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            auth::rate_limit,
        ))
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
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
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                )),
        )
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBody {
    subject: BTreeMap<String, String>,
    jurisdiction: Option<String>,
    source: Option<String>,
    reason: Option<String>,
    external_id: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
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

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Response, Problem> {
    let principal = auth::require(state.requests.config(), &headers, "requests:write")?;
    let key = idempotency_key(&headers)?;
    let submission = Submission {
        subject: body.subject,
        jurisdiction: body.jurisdiction,
        source: body.source,
        reason: body.reason,
        external_id: body.external_id,
        tags: body.tags,
    };
    let submitted = state
        .requests
        .submit(submission, key, &principal.actor)
        .await?;
    let request = &submitted.loaded.request;
    let view = SubmittedView::new(request, state.key.cancel_token(request.id));
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/requests/{}", request.id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RequestView>, Problem> {
    auth::require(state.requests.config(), &headers, "requests:read")?;
    let id = request_id(&id)?;
    let loaded = state
        .requests
        .load(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no request {id}")))?;
    Ok(Json(RequestView::new(&loaded)))
}

async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<HistoryView>, Problem> {
    auth::require(state.requests.config(), &headers, "audit:read")?;
    let id = request_id(&id)?;
    // The head first: events appended after it only extend the chain it vouches for.
    let head = state.requests.store().stream_head(id).await?;
    let loaded = state
        .requests
        .load(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no request {id}")))?;
    Ok(Json(HistoryView::new(&loaded, head.as_ref())?))
}

async fn metrics() -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

async fn ready(State(state): State<AppState>) -> Result<&'static str, Problem> {
    state.requests.store().ping().await?;
    Ok("ready")
}
