//! The dashboard page (being written).

use axum::response::Html;

#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "service",
    responses((status = 200, description = "The dashboard page", body = String, content_type = "text/html")),
    security(("bearer" = ["requests:read"]))
)]
pub async fn dashboard() -> Html<&'static str> {
    Html("<!doctype html><title>Lethe</title><p>The dashboard is being written.")
}
