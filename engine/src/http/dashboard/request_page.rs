//! One request's page (`GET /dashboard/requests/{id}`): its state as `GET /v1/requests/{id}`
//! shows it (no subject identifiers), its cleaners, the outcome of an action just taken
//! ([`super::actions`]), the action forms the signed-in token may use, and the timeline of
//! its events from the same source as `GET /v1/requests/{id}/history`, with the verdict of
//! its hash chain.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::Utc;
use lethe_projections::requests::days_left;

use super::actions::{cleaner_forms, forms, take_outcome, Outcome};
use super::auth::on_request;
use super::html::{document_with, Esc};
use super::page::status_label;
use super::{csrf, error_page, html};
use crate::app::request_page::RequestPage;
use crate::app::views::{CleanerView, HistoryEntry, HistoryView, RequestView};
use crate::http::AppState;

/// The scope that shows the timeline.
const AUDIT_SCOPE: &str = "audit:read";

#[utoipa::path(
    get,
    path = "/dashboard/requests/{id}",
    tag = "service",
    params(crate::http::schema::RequestPath),
    responses(
        (status = 200, description = "One request for people (HTML): its state and cleaners as GET /v1/requests/{id} shows them, the outcome of an action just taken, the action forms the token's scopes allow, and (to a token with audit:read too) the timeline of GET /v1/requests/{id}/history with its hash-chain verdict", body = String, content_type = "text/html"),
        (status = 401, description = "No valid token: an HTML page explaining how to pass one", body = String, content_type = "text/html"),
        (status = 403, description = "The token lacks the scope requests:read (HTML)", body = String, content_type = "text/html"),
        (status = 404, description = "No such request (HTML)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unreachable (HTML)", body = String, content_type = "text/html"),
        crate::http::responses::DashboardPage,
    ),
    security(("bearer" = ["requests:read"]))
)]
pub async fn request(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (session, id) = match on_request(state.requests.config(), &headers, &id) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let page = match state.requests.request_page(id).await {
        Ok(page) => page,
        Err(error) => return error_page(error),
    };
    let (view, history) = (&page.view, &page.history);
    let outcome = take_outcome(&headers);
    let principal = &session.principal;
    let csrf = csrf::token(&state.key, &session.token);
    let mut main = String::new();
    main.push_str(
        "<p class=\"nav\"><a href=\"/dashboard\">&larr; Dashboard</a> · \
         <a href=\"/dashboard/requests\">Requests</a></p>\n",
    );
    if let Some(outcome) = &outcome {
        outcome.render(&mut main);
    }
    summary(&mut main, view);
    cleaners(&mut main, &page, |out, cleaner| {
        cleaner_forms(out, principal, view, cleaner, &csrf);
    });
    forms(&mut main, principal, view, &csrf);
    // The timeline is the auditor's replay: behind `audit:read`, as the history route is.
    if principal.has(AUDIT_SCOPE) {
        timeline(&mut main, history);
    } else {
        main.push_str(
            "<section class=\"card\" id=\"timeline\">\n<h2>Timeline</h2>\n<p class=\"empty\">\
             The event timeline needs a token with the scope <code>audit:read</code>, as \
             <code>GET /v1/requests/{id}/history</code> does.</p>\n</section>\n",
        );
    }
    let mut response = html(
        StatusCode::OK,
        document_with(
            &format!("Request {id} · Lethe"),
            "",
            &format!("Request {}", Esc(&id.to_string())),
            &main,
        ),
    );
    if outcome.is_some() {
        if let Ok(clear) = HeaderValue::from_str(&Outcome::clear(id)) {
            response.headers_mut().insert(header::SET_COOKIE, clear);
        }
    }
    response
}

fn summary(out: &mut String, view: &RequestView) {
    let today = Utc::now().date_naive();
    put!(
        out,
        "<section class=\"card\" id=\"summary\" data-status=\"{status}\">\n<h2>Request \
         <code>{id}</code> <span class=\"badge s-{status}\">{label}</span></h2>\n<dl class=\"facts\">\
         <dt>Jurisdiction</dt><dd>{jurisdiction}</dd>\
         <dt>Received</dt><dd>{received}</dd>\
         <dt>Grace period ends</dt><dd>{due}</dd>\
         <dt>Legal deadline</dt><dd data-deadline=\"{deadline}\">{deadline}{left}</dd>",
        id = Esc(&view.id.to_string()),
        status = view.status.as_str(),
        label = status_label(view.status),
        jurisdiction = Esc(&view.jurisdiction.to_uppercase()),
        received = view.received_at.format("%Y-%m-%d %H:%M UTC"),
        due = view.due_at.format("%Y-%m-%d %H:%M UTC"),
        deadline = view.deadline,
        left = if view.status.is_closed() {
            String::new()
        } else {
            format!(" ({} days left)", days_left(view.deadline, today))
        },
    );
    let mut fact = |name: &str, value: &str| {
        put!(out, "<dt>{}</dt><dd>{}</dd>", Esc(name), Esc(value));
    };
    if let Some(source) = &view.source {
        fact("Source", source);
    }
    if let Some(external) = &view.external_id {
        fact("External id", external);
    }
    if let Some(hold) = &view.hold {
        fact(
            "On hold",
            &format!(
                "since {}: {}",
                hold.since.format("%Y-%m-%d %H:%M"),
                hold.reason
            ),
        );
    }
    if let Some(at) = view.became_due_at {
        fact("Became due", &at.format("%Y-%m-%d %H:%M UTC").to_string());
    }
    if let Some(at) = view.closed_at {
        fact("Closed", &at.format("%Y-%m-%d %H:%M UTC").to_string());
    }
    if let Some(reason) = &view.close_reason {
        fact("Reason", reason);
    }
    out.push_str(
        "</dl>\n<p class=\"note\">The subject's identifiers are not shown here (as in <code>GET \
         /v1/requests/{id}</code>); an auditor reads them with <code>GET \
         /v1/requests/{id}/history</code> (audit:read).</p>\n</section>\n",
    );
}

/// The last failure's class of each cleaner, from its latest `CleanerFailed` event: the
/// HTTP status it answered, and whether a retry may help.
fn error_class(history: &HistoryView, cleaner: &str) -> Option<String> {
    let failed =
        history.events.iter().rev().find(|e| {
            e.event_type == "CleanerFailed" && e.data["cleaner"].as_str() == Some(cleaner)
        })?;
    let retryable = if failed.data["retryable"].as_bool() == Some(false) {
        "permanent"
    } else {
        "retryable"
    };
    Some(match failed.data["status_code"].as_u64() {
        Some(code) => format!("HTTP {code}, {retryable}"),
        None => retryable.to_owned(),
    })
}

fn cleaners(
    out: &mut String,
    page: &RequestPage,
    mut actions: impl FnMut(&mut String, &CleanerView),
) {
    let (view, history) = (&page.view, &page.history);
    out.push_str("<section class=\"card\" id=\"cleaners\">\n<h2>Cleaners</h2>\n");
    if view.cleaners.is_empty() {
        out.push_str(
            "<p class=\"empty\">No cleaner has been asked yet: the request is not due.</p>\n\
             </section>\n",
        );
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th>Cleaner</th><th>State</th><th class=\"num\">Attempts</th>\
         <th>Next</th><th>Last error</th><th>Actions</th></tr></thead>\n<tbody>\n",
    );
    for cleaner in &view.cleaners {
        let next = match (cleaner.status, &cleaner.progress) {
            ("pending", Some(p)) => format!(
                "attempt {}: {} done{}, reported {}; fails unless heard from by {}",
                p.attempt,
                p.progress.done,
                p.progress
                    .total
                    .map(|total| format!(" of {total}"))
                    .unwrap_or_default(),
                p.reported_at.format("%Y-%m-%d %H:%M"),
                p.deadline.format("%Y-%m-%d %H:%M UTC"),
            ),
            ("pending", None) => match page.next_attempt_of(&cleaner.name, cleaner.attempts) {
                Some(next) => format!(
                    "attempt {} at {}",
                    cleaner.attempts + 1,
                    next.at.format("%Y-%m-%d %H:%M UTC")
                ),
                None => format!("attempt {}", cleaner.attempts + 1),
            },
            ("exhausted", _) => "waits for a person: retry or skip".to_owned(),
            _ => "–".to_owned(),
        };
        let error = match (&cleaner.last_error, error_class(history, &cleaner.name)) {
            (Some(text), Some(class)) => format!("{text} ({class})"),
            (Some(text), None) => text.clone(),
            (None, _) => "–".to_owned(),
        };
        put!(
            out,
            "<tr data-cleaner=\"{name}\" data-state=\"{state}\"><td>\
             <a href=\"/dashboard/requests?cleaner={name}\" title=\"Requests this cleaner has \
             not finished\">{name}</a></td>\
             <td><span class=\"state {state}\">{state}</span></td>\
             <td class=\"num\">{attempts} of {max}</td><td>{next}</td><td>{error}</td><td>",
            name = Esc(&cleaner.name),
            state = cleaner.status,
            attempts = cleaner.attempts,
            max = cleaner.max_attempts,
            next = Esc(&next),
            error = Esc(&error),
        );
        actions(out, cleaner);
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// What an entry says beside its type: its cleaner, reason, extension or error.
fn detail(entry: &HistoryEntry) -> String {
    let data = &entry.data;
    let mut parts = Vec::new();
    if let Some(cleaner) = data["cleaner"].as_str() {
        parts.push(format!("cleaner {cleaner}"));
    }
    if let Some(attempt) = data["attempt"].as_u64() {
        parts.push(format!("attempt {attempt}"));
    }
    if let Some(by) = data.get("by").filter(|v| v.is_object()) {
        let months = by["months"].as_u64().unwrap_or(0);
        let days = by["days"].as_u64().unwrap_or(0);
        parts.push(match (months, days) {
            (0, d) => format!("by {d} days"),
            (m, 0) => format!("by {m} months"),
            (m, d) => format!("by {m} months {d} days"),
        });
    }
    for field in ["reason", "error"] {
        if let Some(text) = data[field].as_str() {
            parts.push(text.to_owned());
        }
    }
    parts.join(" · ")
}

fn timeline(out: &mut String, history: &HistoryView) {
    let verdict = match &history.chain_error {
        None => "<span class=\"ok\">the hash chain verifies</span>".to_owned(),
        Some(broken) => format!(
            "<span class=\"bad\">the hash chain does not verify at version {}: {}</span>",
            broken.version,
            Esc(&broken.problem)
        ),
    };
    put!(
        out,
        "<section class=\"card\" id=\"timeline\" data-verified=\"{}\">\n<h2>Timeline \
         <span class=\"count\">({} events; {verdict})</span></h2>\n<table>\n<thead><tr>\
         <th>Time (UTC)</th><th>Event</th><th>Actor</th><th>Detail</th><th>Status after</th>\
         </tr></thead>\n<tbody>\n",
        history.verified,
        history.events.len(),
    );
    for entry in &history.events {
        put!(
            out,
            "<tr data-event=\"{kind}\" data-actor=\"{actor}\"><td class=\"date\">{at}</td>\
             <td>{kind}</td><td>{actor}</td><td>{detail}</td>\
             <td><span class=\"badge s-{status}\">{label}</span></td></tr>\n",
            kind = Esc(&entry.event_type),
            actor = Esc(&entry.actor),
            at = entry.recorded_at.format("%Y-%m-%d %H:%M:%S"),
            detail = Esc(&detail(entry)),
            status = entry.status_after.as_str(),
            label = status_label(entry.status_after),
        );
    }
    out.push_str(
        "</tbody>\n</table>\n<p class=\"note\">The same events with their hashes: <code>GET \
         /v1/requests/{id}/history</code>.</p>\n</section>\n",
    );
}
