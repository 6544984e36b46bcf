//! The subject's cancel link, for people: `GET /v1/requests/{id}/cancel?token=...` (the
//! `cancel_url` of the notifier's messages) shows what will be cancelled and one button, and
//! changes nothing (mail scanners follow links); the button's form `POST`s to the same
//! address, and a form post (`application/x-www-form-urlencoded`) is answered with a page
//! saying what happened. API clients keep the JSON answers of [`super::admin::cancel`].
//!
//! The pages carry no identifier of the subject (the subject's data is sealed): only the
//! request's dates and what cancelling means. Every outcome is a page with its own status:
//! 200 (the confirmation, or cancelled), 403 (the token does not match), 404 (no such
//! request), 409 (already cancelled, or the grace period is over).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use lethe_domain::{DomainError, RequestStatus};

use super::admin::Canceller;
use super::dashboard::{document, html, Esc};
use super::problem::Problem;
use super::AppState;
use crate::app::views::RequestView;
use crate::app::{EventMetadata, RequestError};

/// Whether a `POST` is the page's form (answered with a page) rather than an API call.
pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

#[utoipa::path(
    get,
    path = "/v1/requests/{id}/cancel",
    tag = "operations",
    params(super::schema::RequestPath),
    responses(
        (status = 200, description = "The request is in its grace period: what cancelling means, the request's received and due dates, and one button whose form POSTs to this address. A GET changes nothing.", body = String, content_type = "text/html"),
        super::responses::CancelPage,
    ),
    security(("bearer" = ["admin"]), ("cancel_token" = []))
)]
pub async fn page(
    State(state): State<AppState>,
    canceller: Result<Canceller, Problem>,
) -> Response {
    let canceller = match canceller {
        Ok(canceller) => canceller,
        Err(problem) => return refused(&problem),
    };
    match state.requests.show(canceller.id).await {
        Ok(view) if cancellable(view.status) => confirm(&view),
        Ok(view) => closed(&view),
        Err(error) => failed(error),
    }
}

/// The form's `POST`: cancels, and answers with a page saying what happened.
pub(super) async fn cancel_by_form(
    state: &AppState,
    canceller: Result<Canceller, Problem>,
    metadata: impl FnOnce(&Canceller) -> Result<EventMetadata, Problem>,
) -> Response {
    let canceller = match canceller {
        Ok(canceller) => canceller,
        Err(problem) => return refused(&problem),
    };
    let metadata = match metadata(&canceller) {
        Ok(metadata) => metadata,
        Err(problem) => return refused(&problem),
    };
    match state.requests.cancel(canceller.id, &metadata, None).await {
        Ok(loaded) => done(&RequestView::new(&loaded)),
        Err(RequestError::Rejected(DomainError::Closed { .. } | DomainError::CancelAfterDue)) => {
            match state.requests.show(canceller.id).await {
                Ok(view) => closed(&view),
                Err(error) => failed(error),
            }
        }
        Err(error) => failed(error),
    }
}

/// What the aggregate lets a subject cancel: a request in its grace period.
const fn cancellable(status: RequestStatus) -> bool {
    matches!(status, RequestStatus::Pending | RequestStatus::OnHold)
}

fn day(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y").to_string()
}

fn moment(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y, %H:%M UTC").to_string()
}

/// The request's dates, as a definition list (HTML).
fn dates(view: &RequestView) -> String {
    format!(
        "<dl><dt>Received</dt><dd data-field=\"received\">{}</dd>\
         <dt>Erasure begins</dt><dd data-field=\"due\">{}</dd></dl>",
        day(view.received_at),
        moment(view.due_at)
    )
}

/// A page with `outcome` (a word a test or a person can read) and `body` (HTML).
fn page_of(status: StatusCode, outcome: &str, title: &str, body: &str) -> Response {
    let main = format!(
        "<section class=\"card gate\" data-outcome=\"{outcome}\"><h2>{}</h2>{body}</section>",
        Esc(title)
    );
    html(status, document(&format!("{title} · Lethe"), &main))
}

fn confirm(view: &RequestView) -> Response {
    let body = format!(
        "<p>You asked for your personal data to be erased. Until the date below you can still \
         change your mind: cancelling stops the erasure, and nothing will be deleted because \
         of this request.</p>{}\
         <form method=\"post\"><button type=\"submit\">Cancel this erasure request</button>\
         </form><p class=\"note\">Nothing changes unless you press the button.</p>",
        dates(view)
    );
    page_of(
        StatusCode::OK,
        "confirm",
        "Cancel your erasure request?",
        &body,
    )
}

fn done(view: &RequestView) -> Response {
    let body = format!(
        "<p>Your erasure request is cancelled: none of your data will be deleted because of \
         it. You can make a new request at any time.</p>{}",
        dates(view)
    );
    page_of(StatusCode::OK, "cancelled", "Request cancelled", &body)
}

/// A request that can no longer be cancelled: 409, saying why.
fn closed(view: &RequestView) -> Response {
    let (outcome, title, text) = match view.status {
        RequestStatus::Cancelled => (
            "already-cancelled",
            "Already cancelled",
            "This erasure request was already cancelled: nothing will be deleted because of it.",
        ),
        RequestStatus::Rejected => (
            "closed",
            "Request closed",
            "This erasure request was closed without erasure, so there is nothing to cancel.",
        ),
        _ => (
            "too-late",
            "Too late to cancel",
            "The period in which this request could be cancelled is over: erasure has begun \
             or is complete.",
        ),
    };
    let body = format!("<p>{text}</p>{}", dates(view));
    page_of(StatusCode::CONFLICT, outcome, title, &body)
}

/// A refusal before the request was read: the token, the id, the caller.
fn refused(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
    let (outcome, title, text) = match status {
        StatusCode::FORBIDDEN => (
            "wrong-token",
            "This link is not valid",
            "The link does not match this request. Use the link from your most recent message \
             exactly as it was sent.",
        ),
        StatusCode::UNAUTHORIZED => (
            "no-token",
            "This link is incomplete",
            "The link has no token. Use the link from your message exactly as it was sent.",
        ),
        _ => ("invalid", problem.title, ""),
    };
    let text = if text.is_empty() {
        Esc(&problem.detail).to_string()
    } else {
        text.to_owned()
    };
    page_of(status, outcome, title, &format!("<p>{text}</p>"))
}

/// A failure of the application service, said as the API would say it.
fn failed(error: RequestError) -> Response {
    let problem = Problem::from(error);
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let outcome = if status == StatusCode::NOT_FOUND {
        "not-found"
    } else {
        "failed"
    };
    page_of(
        status,
        outcome,
        problem.title,
        &format!("<p>{}</p>", Esc(&problem.detail)),
    )
}
