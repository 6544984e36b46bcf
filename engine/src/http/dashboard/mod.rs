//! The dashboard page (`GET /dashboard`): server-rendered HTML from the projections, with no
//! script at all. It shows the same figures as `GET /v1/stats` (computed by the same
//! application service, [`crate::app::dashboard`]), the overdue and at-risk requests most
//! urgent first, cleaner health and an inline SVG chart of completion times per month.
//!
//! Every figure carries `data-stat="<path in the GET /v1/stats JSON>"` (e.g.
//! `by_status.completed`, `cleaners.billing.p95_seconds`, `completion.2025-03.median_days`)
//! and `data-value="<the exact number>"`, so a test (or a scraper) reads the page as data.
//!
//! Auth, by token in a cookie or in the query: `?token=...` is checked and moved
//! into an HttpOnly, SameSite=Strict cookie (`lethe_token`, path `/dashboard`), and the browser
//! is sent back to `/dashboard` without the token in its address; afterwards the cookie, or an
//! `Authorization: Bearer` header, is checked against `[[tokens]]` for `requests:read`. With no
//! tokens configured the page is open, as the API is.
//!
//! One concern per file: `auth` (who may see it), `page` (the document), `chart` (the
//! completion chart), `html` (the document around a page, escaping); here the handler and
//! the headers every answer carries.

/// Writes into a `String` (which cannot fail).
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        // Writing to a String cannot fail.
        let _ = write!($out, $($arg)*);
    }};
}

mod actions;
mod annual;
mod auth;
mod chart;
mod csrf;
mod html;
mod list;
mod page;
mod request_page;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::problem::Problem;
use super::AppState;
use crate::app::RequestError;
pub use actions::{__path_act, act};
use auth::{refusal, take_token};
use html::CSS;
pub(super) use html::{document, Esc};
pub use list::{__path_requests, requests};
pub use page::render;
pub use request_page::{__path_request, request};

/// The cookie that holds the dashboard's token.
pub const COOKIE: &str = "lethe_token";
const PATH: &str = "/dashboard";

/// The page carries no script; its only inline style is allowed by hash.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{}'; img-src data:; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()))
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "service",
    params(("token" = Option<String>, Query, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", description = "A token with requests:read, given once: it is moved into the HttpOnly cookie `lethe_token` (path /dashboard) and the browser is redirected to /dashboard. Afterwards the cookie, or an `Authorization: Bearer` header, is checked.")),
    responses(
        (status = 200, description = "The dashboard page: every figure is marked `data-stat` (its path in GET /v1/stats) and `data-value`", body = String, content_type = "text/html"),
        (status = 303, description = "The query's token was valid and is now in the `lethe_token` cookie; follow Location", headers(("Location" = String), ("Set-Cookie" = String))),
        (status = 401, description = "No valid token: an HTML page explaining how to pass one", body = String, content_type = "text/html"),
        (status = 403, description = "The token lacks the scope requests:read (HTML)", body = String, content_type = "text/html"),
        (status = 500, description = "An internal failure (HTML)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unreachable, or this instance serves no projections (HTML)", body = String, content_type = "text/html"),
        super::responses::Service,
    ),
    security(("bearer" = ["requests:read"]))
)]
pub async fn dashboard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let config = state.requests.config();
    if let Some(token) = query.get("token") {
        return take_token(config, token, &headers);
    }
    if let Some(refused) = refusal(config, &headers) {
        return refused;
    }
    let now = Utc::now();
    match state.requests.dashboard(now.date_naive()).await {
        Ok(figures) => html(StatusCode::OK, render(&figures, now)),
        Err(error) => error_page(error),
    }
}

/// The page for a failure of the application service, saying only what the API would say.
fn error_page(error: RequestError) -> Response {
    match error {
        RequestError::NoProjections => message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Dashboard unavailable",
            "This instance serves no projections, so there is nothing to show. The dashboard is \
             served by <code>lethe serve</code>.",
        ),
        error => {
            // Logged once by the conversion.
            let problem = Problem::from(error);
            let status =
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            message_page(status, problem.title, &Esc(&problem.detail).to_string())
        }
    }
}

fn common_headers(out: &mut HeaderMap) {
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Never a referrer to another site; `same-origin` rather than `no-referrer`, under which
    // a browser sends `Origin: null` with the dashboard's own form posts (ADR 35).
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
}

/// An HTML answer with the headers every page carries (no caching, no referrer to other
/// sites, the CSP).
pub(super) fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    common_headers(out);
    response
}

/// A small page with a title and a message (`message` is HTML: escape what goes into it).
fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<section class=\"card gate\"><h2>{}</h2><p>{message}</p></section>",
        Esc(title)
    );
    html(status, document(&format!("{title} · Lethe"), &body))
}
