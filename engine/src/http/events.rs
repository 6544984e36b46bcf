//! The HTTP event feed (being written).

use axum::http::StatusCode;

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "audit",
    responses((status = 501, description = "Not implemented yet")),
    security(("bearer" = ["audit:read"]))
)]
pub async fn feed() -> StatusCode {
    StatusCode::NOT_IMPLEMENTED
}
