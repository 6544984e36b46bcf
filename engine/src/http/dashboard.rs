//! The dashboard page (`GET /dashboard`): server-rendered HTML from the projections, with no
//! script at all. It shows the same figures as `GET /v1/stats` (computed by the same
//! [`compute_stats`]), the overdue and at-risk requests most urgent first, cleaner health and
//! an inline SVG chart of completion times per month.
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

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::LazyLock;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use lethe_domain::RequestStatus;
use lethe_projections::requests::{days_left, RequestRow};
use sha2::{Digest, Sha256};

use super::problem::Problem;
use super::queries::{compute_stats, StatsView};
use super::{auth, AppState};
use crate::config::Config;
use crate::projections::{ProjectionStore, RequestFilter};
use crate::store::StoreError;

macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        // Writing to a String cannot fail.
        let _ = write!($out, $($arg)*);
    }};
}

/// The cookie that holds the dashboard's token.
pub const COOKIE: &str = "lethe_token";
const SCOPE: &str = "requests:read";
const PATH: &str = "/dashboard";
/// Rows shown in each of the overdue and at-risk lists.
pub const LIST_LIMIT: usize = 50;
const PAGE: u32 = 500;
/// Months in the completion chart (ending with the current one) and in the table beside it.
const CHART_MONTHS: u32 = 12;
const TABLE_MONTHS: usize = 24;

const CSS: &str = include_str!("dashboard/style.css");

/// The page carries no script; its only inline style is allowed by hash.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{}'; img-src data:; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'",
        base64(&Sha256::digest(CSS.as_bytes()))
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
    let Some(store) = state.requests.projections() else {
        return message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Dashboard unavailable",
            "This instance serves no projections, so there is nothing to show. The dashboard is \
             served by <code>lethe serve</code>.",
        );
    };
    let now = Utc::now();
    let at_risk_days = config.policy.at_risk_days;
    match gather(&**store, at_risk_days, now.date_naive()).await {
        Ok(figures) => html(StatusCode::OK, render(&figures, now)),
        Err(error) => {
            // Logged once by the conversion; the page says only what the API would say.
            let problem = Problem::from(error);
            let status =
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            message_page(status, problem.title, &Esc(&problem.detail).to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Auth

/// `?token=`: check it, keep it in the cookie, and send the browser back without it.
fn take_token(config: &Config, token: &str, headers: &HeaderMap) -> Response {
    if config.tokens.is_empty() {
        // Auth is off: nothing to keep, but the token should not stay in the address bar.
        return redirect(None, headers);
    }
    let Some(presented) = cookie_safe(token).then(|| bearer(token)).flatten() else {
        return denied(StatusCode::UNAUTHORIZED, false);
    };
    match auth::require(config, &presented, SCOPE) {
        Ok(_) => redirect(Some(token), headers),
        Err(problem) => denied(status_of(&problem), false),
    }
}

/// The bearer header if there is one, else the cookie, must hold `requests:read`; `Some` is
/// the page that refuses the caller.
fn refusal(config: &Config, headers: &HeaderMap) -> Option<Response> {
    let (presented, from_cookie) = if let Some(value) = headers.get(header::AUTHORIZATION) {
        let mut only = HeaderMap::new();
        only.insert(header::AUTHORIZATION, value.clone());
        (only, false)
    } else if let Some(token) = cookie(headers) {
        let Some(only) = bearer(token) else {
            return Some(denied(StatusCode::UNAUTHORIZED, true));
        };
        (only, true)
    } else {
        (HeaderMap::new(), false)
    };
    auth::require(config, &presented, SCOPE)
        .err()
        .map(|problem| {
            let status = status_of(&problem);
            denied(status, from_cookie && status == StatusCode::UNAUTHORIZED)
        })
}

fn status_of(problem: &Problem) -> StatusCode {
    StatusCode::from_u16(problem.status).unwrap_or(StatusCode::UNAUTHORIZED)
}

fn bearer(token: &str) -> Option<HeaderMap> {
    let value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Some(headers)
}

/// The `lethe_token` cookie, from any `Cookie` header.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Whether a token can be a cookie value as is (RFC 6265 `cookie-octet`s).
fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 1024
        && token
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

fn secure(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if https {
        "; Secure"
    } else {
        ""
    }
}

fn redirect(token: Option<&str>, headers: &HeaderMap) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let out = response.headers_mut();
    out.insert(header::LOCATION, HeaderValue::from_static(PATH));
    common_headers(out);
    if let Some(token) = token {
        let cookie = format!(
            "{COOKIE}={token}; Path={PATH}; HttpOnly; SameSite=Strict{}",
            secure(headers)
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            out.insert(header::SET_COOKIE, value);
        }
    }
    response
}

/// 401 or 403 as a page that says how to pass a token.
fn denied(status: StatusCode, clear_cookie: bool) -> Response {
    let why = if status == StatusCode::FORBIDDEN {
        "This token is valid but lacks the scope <code>requests:read</code>, which the \
         dashboard needs."
    } else {
        "The dashboard needs a token with the scope <code>requests:read</code>; none was \
         presented, or the one presented is not (or no longer) configured."
    };
    let body = format!(
        "<section class=\"card gate\">\
         <h2>Sign in to the Lethe dashboard</h2>\
         <p>{why}</p>\
         <form method=\"get\" action=\"{PATH}\">\
         <input type=\"password\" name=\"token\" placeholder=\"lethe_…\" autocomplete=\"off\" \
         aria-label=\"Token\" required><button type=\"submit\">Open</button></form>\
         <p class=\"note\">The token is kept in an HttpOnly cookie for this browser session and \
         removed from the address.</p>\
         <p>Other ways to pass it:</p><ul>\
         <li>open <code>{PATH}?token=&lt;token&gt;</code> once;</li>\
         <li>send <code>Authorization: Bearer &lt;token&gt;</code>.</li></ul>\
         <p class=\"note\">Create one with <code>lethe token create --scope requests:read</code> \
         and add the printed <code>[[tokens]]</code> block to <code>lethe.toml</code>.</p>\
         </section>"
    );
    let mut response = html(status, document("Sign in · Lethe", &body));
    let out = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        out.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lethe\""),
        );
    }
    if clear_cookie {
        out.insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "lethe_token=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict",
            ),
        );
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Responses

fn common_headers(out: &mut HeaderMap) {
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
}

fn html(status: StatusCode, body: String) -> Response {
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

/// The whole document around `main` (HTML).
fn document(title: &str, main: &str) -> String {
    document_with(title, "", "", main)
}

fn document_with(title: &str, head: &str, meta: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{head}\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <header class=\"top\"><div class=\"wrap\"><div class=\"brand\">Lethe<span>erasure \
         requests</span></div><div class=\"meta\">{meta}</div></div></header>\n\
         <main class=\"wrap\">\n{main}\n</main>\n</body>\n</html>\n",
        Esc(title)
    )
}

// ---------------------------------------------------------------------------------------------
// Data

/// What the page shows, read from the projections.
#[derive(Debug)]
pub struct Figures {
    pub stats: StatsView,
    /// Most urgent first, at most [`LIST_LIMIT`].
    pub overdue: Vec<RequestRow>,
    pub at_risk: Vec<RequestRow>,
    pub today: NaiveDate,
}

/// Reads the figures: the stats of `GET /v1/stats`, and the overdue and at-risk lists.
pub async fn gather(
    store: &dyn ProjectionStore,
    at_risk_days: u32,
    today: NaiveDate,
) -> Result<Figures, StoreError> {
    let stats = compute_stats(store, at_risk_days, today).await?;
    let filter = RequestFilter {
        today: Some(today),
        at_risk_days: i64::from(at_risk_days),
        ..RequestFilter::default()
    };
    let overdue = most_urgent(
        store,
        &RequestFilter {
            overdue: true,
            ..filter.clone()
        },
    )
    .await?;
    let at_risk = most_urgent(
        store,
        &RequestFilter {
            at_risk: true,
            ..filter
        },
    )
    .await?;
    Ok(Figures {
        stats,
        overdue,
        at_risk,
        today,
    })
}

/// The [`LIST_LIMIT`] rows with the earliest deadlines, reading page by page (never more than
/// a page and the kept rows in memory).
async fn most_urgent(
    store: &dyn ProjectionStore,
    filter: &RequestFilter,
) -> Result<Vec<RequestRow>, StoreError> {
    let mut kept: Vec<RequestRow> = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_requests(filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        kept.extend(page.into_iter().filter(|row| filter.accepts(row)));
        kept.sort_by(|a, b| {
            (a.deadline, a.received_at, a.id).cmp(&(b.deadline, b.received_at, b.id))
        });
        kept.truncate(LIST_LIMIT);
    }
    Ok(kept)
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// The dashboard document.
pub fn render(figures: &Figures, now: DateTime<Utc>) -> String {
    let stats = &figures.stats;
    let mut main = String::new();
    kpis(&mut main, stats);
    statuses(&mut main, stats);
    request_list(
        &mut main,
        "Overdue",
        "overdue",
        stats.overdue,
        &figures.overdue,
        figures.today,
        "Nothing is overdue.",
    );
    request_list(
        &mut main,
        "At risk",
        "at-risk",
        stats.at_risk,
        &figures.at_risk,
        figures.today,
        "Nothing is at risk.",
    );
    cleaners(&mut main, stats);
    completion(&mut main, stats, figures.today);
    put!(
        main,
        "<footer>The same figures as JSON: <code>GET /v1/stats</code>. At risk: an open request \
         whose legal deadline is at most {} days away; overdue: past it.</footer>",
        stats.at_risk_days
    );
    let meta = format!(
        "Generated {} UTC · refreshes every minute",
        now.format("%Y-%m-%d %H:%M")
    );
    document_with(
        "Dashboard · Lethe",
        "<meta http-equiv=\"refresh\" content=\"60\">\n",
        &meta,
        &main,
    )
}

/// ` data-stat="path" data-value="value"`: the figure's path in the `GET /v1/stats` JSON and
/// its exact value.
fn stat(path: &str, value: impl fmt::Display) -> String {
    format!(" data-stat=\"{}\" data-value=\"{value}\"", Esc(path))
}

fn kpis(out: &mut String, stats: &StatsView) {
    let open: u64 = RequestStatus::ALL
        .iter()
        .filter(|s| !s.is_closed())
        .map(|s| count(stats, *s))
        .sum();
    let hot = |n: u64| if n > 0 { " hot" } else { "" };
    put!(
        out,
        "<section class=\"kpis\">\n\
         <div class=\"kpi\"><div class=\"label\">Requests</div>\
         <div class=\"value\"{total}>{}</div><div class=\"sub\">all time</div></div>\n\
         <div class=\"kpi open\"><div class=\"label\">Open</div>\
         <div class=\"value\">{open}</div><div class=\"sub\">not yet completed, cancelled or \
         rejected</div></div>\n\
         <div class=\"kpi danger{}\"><div class=\"label\">Overdue</div>\
         <div class=\"value\"{overdue}>{}</div><div class=\"sub\">open, past the legal \
         deadline</div></div>\n\
         <div class=\"kpi warn{}\"><div class=\"label\">At risk</div>\
         <div class=\"value\"{at_risk}>{}</div><div class=\"sub\">deadline within \
         <span{days}>{}</span> days</div></div>\n\
         </section>\n",
        stats.total,
        hot(stats.overdue),
        stats.overdue,
        hot(stats.at_risk),
        stats.at_risk,
        stats.at_risk_days,
        total = stat("total", stats.total),
        overdue = stat("overdue", stats.overdue),
        at_risk = stat("at_risk", stats.at_risk),
        days = stat("at_risk_days", stats.at_risk_days),
    );
}

fn count(stats: &StatsView, status: RequestStatus) -> u64 {
    stats.by_status.get(status.as_str()).copied().unwrap_or(0)
}

const fn status_label(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::Pending => "Pending",
        RequestStatus::OnHold => "On hold",
        RequestStatus::Due => "Due",
        RequestStatus::NeedsAttention => "Needs attention",
        RequestStatus::Completed => "Completed",
        RequestStatus::Cancelled => "Cancelled",
        RequestStatus::Rejected => "Rejected",
    }
}

/// Counts by status: a stacked bar and its legend.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn statuses(out: &mut String, stats: &StatsView) {
    out.push_str("<section class=\"card\">\n<h2>By status</h2>\n");
    let total = stats.total.max(1) as f64;
    let mut bar = String::new();
    let mut x = 0.0;
    for status in RequestStatus::ALL {
        let n = count(stats, status);
        if n == 0 {
            continue;
        }
        let width = n as f64 / total * 1000.0;
        put!(
            bar,
            "<rect class=\"s-{}\" x=\"{x:.2}\" y=\"0\" width=\"{width:.2}\" height=\"18\">\
             <title>{}: {n}</title></rect>",
            status.as_str(),
            status_label(status)
        );
        x += width;
    }
    if stats.total == 0 {
        bar.push_str("<rect x=\"0\" y=\"0\" width=\"1000\" height=\"18\" fill=\"#e3e6ea\"/>");
    }
    put!(
        out,
        "<svg class=\"statusbar\" viewBox=\"0 0 1000 18\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"Requests by status\">{bar}</svg>\n<ul class=\"legend\">\n"
    );
    for status in RequestStatus::ALL {
        let n = count(stats, status);
        put!(
            out,
            "<li><span class=\"dot s-{key}\"></span>{label} <span class=\"n\"{attrs}>{n}</span>\
             <span class=\"pct\">{pct:.0}%</span></li>\n",
            key = status.as_str(),
            label = status_label(status),
            attrs = stat(&format!("by_status.{}", status.as_str()), n),
            pct = n as f64 / total * 100.0,
        );
    }
    out.push_str("</ul>\n</section>\n");
}

fn days_text(left: i64) -> (String, &'static str) {
    match left {
        i64::MIN..=-2 => (format!("{} days late", -left), "late"),
        -1 => ("1 day late".to_owned(), "late"),
        0 => ("due today".to_owned(), "soon"),
        1 => ("1 day".to_owned(), "soon"),
        _ => (format!("{left} days"), "soon"),
    }
}

/// The overdue or at-risk list.
fn request_list(
    out: &mut String,
    title: &str,
    id: &str,
    total: u64,
    rows: &[RequestRow],
    today: NaiveDate,
    empty: &str,
) {
    put!(
        out,
        "<section class=\"card\" id=\"{id}\">\n<h2>{title} <span class=\"count\">({total})</span></h2>\n"
    );
    if rows.is_empty() {
        put!(out, "<p class=\"empty\">{}</p>\n</section>\n", Esc(empty));
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table class=\"requests\">\n<colgroup><col class=\"c-id\">\
         <col class=\"c-law\"><col class=\"c-status\"><col class=\"c-date\">\
         <col class=\"c-date\"><col class=\"c-left\"></colgroup>\n<thead><tr><th>Request</th>\
         <th>Jurisdiction</th><th>Status</th><th>Received</th><th>Deadline</th>\
         <th class=\"num\">Days left</th></tr></thead>\n<tbody>\n",
    );
    for row in rows {
        let left = days_left(row.deadline, today);
        let (text, class) = days_text(left);
        put!(
            out,
            "<tr data-request=\"{id}\"><td class=\"id\">{id}</td><td>{jurisdiction}</td>\
             <td><span class=\"badge s-{status}\">{label}</span></td>\
             <td class=\"date\">{received}</td><td class=\"date\">{deadline}</td>\
             <td class=\"num {class}\" data-days-left=\"{left}\">{text}</td></tr>\n",
            id = Esc(&row.id.to_string()),
            jurisdiction = Esc(&row.jurisdiction.to_uppercase()),
            status = row.status.as_str(),
            label = status_label(row.status),
            received = row.received_at.format("%Y-%m-%d"),
            deadline = row.deadline.format("%Y-%m-%d"),
        );
    }
    out.push_str("</tbody>\n</table></div>\n");
    if total > rows.len() as u64 {
        put!(
            out,
            "<p class=\"note\">The {} most urgent of {total}; the rest: <code>GET \
             /v1/requests?{}=true</code>.</p>\n",
            rows.len(),
            if id == "overdue" {
                "overdue"
            } else {
                "at_risk"
            }
        );
    }
    out.push_str("</section>\n");
}

/// A duration in seconds, readably.
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!("{:.1} min", seconds / 60.0)
    } else if seconds < 86_400.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} d", seconds / 86_400.0)
    }
}

/// Cleaner health: attempts, outcomes, success rate, time to erase.
fn cleaners(out: &mut String, stats: &StatsView) {
    out.push_str("<section class=\"card\" id=\"cleaners\">\n<h2>Cleaner health</h2>\n");
    if stats.cleaners.is_empty() {
        out.push_str("<p class=\"empty\">No request has reached a cleaner yet.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th>Cleaner</th><th class=\"num\">Attempts</th>\
         <th class=\"num\">Succeeded</th><th class=\"num\">Exhausted</th>\
         <th class=\"num\">Skipped</th><th class=\"num\">Success rate</th>\
         <th class=\"num\">p50 time to erase</th><th class=\"num\">p95</th></tr></thead>\n<tbody>\n",
    );
    for (name, c) in &stats.cleaners {
        let path = |field: &str| format!("cleaners.{name}.{field}");
        let rate = c.success_rate.clamp(0.0, 1.0);
        let (p50, p95) = if c.succeeded == 0 {
            ("–".to_owned(), "–".to_owned())
        } else {
            (duration(c.p50_seconds), duration(c.p95_seconds))
        };
        put!(
            out,
            "<tr><td>{name_html}</td>\
             <td class=\"num\"{a}>{attempts}</td>\
             <td class=\"num\"{s}>{succeeded}</td>\
             <td class=\"num{bad}\"{e}>{exhausted}</td>\
             <td class=\"num\"{k}>{skipped}</td>\
             <td class=\"num\"><div class=\"rate\"><svg viewBox=\"0 0 100 8\" \
             preserveAspectRatio=\"none\" aria-hidden=\"true\">\
             <rect width=\"100\" height=\"8\" fill=\"#e9ecf0\"/>\
             <rect width=\"{bar:.1}\" height=\"8\" fill=\"{color}\"/></svg>\
             <span{r}>{pct:.1}%</span></div></td>\
             <td class=\"num\"{p50a}>{p50}</td><td class=\"num\"{p95a}>{p95}</td></tr>\n",
            name_html = Esc(name),
            a = stat(&path("attempts"), c.attempts),
            attempts = c.attempts,
            s = stat(&path("succeeded"), c.succeeded),
            succeeded = c.succeeded,
            bad = if c.exhausted > 0 { " bad" } else { "" },
            e = stat(&path("exhausted"), c.exhausted),
            exhausted = c.exhausted,
            k = stat(&path("skipped"), c.skipped),
            skipped = c.skipped,
            bar = rate * 100.0,
            color = if rate >= 0.9 {
                "#1d8a4b"
            } else if rate >= 0.6 {
                "#e0a100"
            } else {
                "#c62d3b"
            },
            r = stat(&path("success_rate"), c.success_rate),
            pct = c.success_rate * 100.0,
            p50a = stat(&path("p50_seconds"), c.p50_seconds),
            p95a = stat(&path("p95_seconds"), c.p95_seconds),
        );
    }
    out.push_str(
        "</tbody>\n</table>\n<p class=\"note\">Success rate: cleaners that succeeded per attempt \
         made. Time to erase: from the request becoming due to the cleaner's success.</p>\n\
         </section>\n",
    );
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn month_key(date: NaiveDate) -> String {
    format!("{:04}-{:02}", date.year(), date.month())
}

/// A round axis maximum and step for values up to `max`.
fn nice_scale(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 4.0;
    let magnitude = 10_f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

fn axis_number(value: f64) -> String {
    if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Time to completion per month: an SVG bar chart of the last months and a table of the
/// figures.
fn completion(out: &mut String, stats: &StatsView, today: NaiveDate) {
    out.push_str(
        "<section class=\"card\" id=\"completion\">\n<h2>Time to completion \
         <span class=\"count\">(days from receipt, by month of completion)</span></h2>\n",
    );
    if stats.completion.is_empty() {
        out.push_str("<p class=\"empty\">No request has completed yet.</p>\n</section>\n");
        return;
    }
    out.push_str("<div class=\"chart-row\">\n<div>\n");
    chart(out, stats, today);
    out.push_str(
        "</div>\n<div>\n<table>\n<thead><tr><th>Month</th><th class=\"num\">Completed</th>\
         <th class=\"num\">Median</th><th class=\"num\">Mean</th></tr></thead>\n<tbody>\n",
    );
    for (month, c) in stats.completion.iter().rev().take(TABLE_MONTHS) {
        let path = |field: &str| format!("completion.{month}.{field}");
        put!(
            out,
            "<tr><td>{m}</td><td class=\"num\"{a}>{}</td><td class=\"num\"{b}>{:.1}</td>\
             <td class=\"num\"{c}>{:.1}</td></tr>\n",
            c.completed,
            c.median_days,
            c.mean_days,
            m = Esc(month),
            a = stat(&path("completed"), c.completed),
            b = stat(&path("median_days"), c.median_days),
            c = stat(&path("mean_days"), c.mean_days),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    if stats.completion.len() > TABLE_MONTHS {
        put!(
            out,
            "<p class=\"note\">The last {TABLE_MONTHS} months with completions; all of them: \
             <code>GET /v1/stats</code>.</p>\n"
        );
    }
    out.push_str("</div>\n</div>\n</section>\n");
}

#[allow(clippy::cast_precision_loss)] // at most 12 months
fn chart(out: &mut String, stats: &StatsView, today: NaiveDate) {
    const W: f64 = 720.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 40.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 24.0;
    const BOTTOM: f64 = 42.0;
    let first_of_month = today.with_day(1).unwrap_or(today);
    let months: Vec<NaiveDate> = (0..CHART_MONTHS)
        .rev()
        .map(|back| {
            first_of_month
                .checked_sub_months(Months::new(back))
                .unwrap_or(first_of_month)
        })
        .collect();
    let shown: Vec<_> = months
        .iter()
        .map(|m| stats.completion.get(&month_key(*m)))
        .collect();
    let max = shown
        .iter()
        .flatten()
        .map(|c| c.median_days.max(c.mean_days))
        .fold(0.0, f64::max);
    let (top, step) = nice_scale(max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h * (1.0 - v / top);
    out.push_str(
        "<div class=\"keys\"><span><i class=\"dot k-median\"></i>median</span>\
         <span><i class=\"dot k-mean\"></i>mean</span></div>\n",
    );
    put!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"Median and mean \
         days to completion for the last {CHART_MONTHS} months\">\n"
    );
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        put!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            W - RIGHT,
            LEFT - 6.0,
            y(tick) + 4.0,
            axis_number(tick),
            yy = y(tick),
        );
        tick += step;
    }
    put!(
        out,
        "<text class=\"unit\" x=\"{:.1}\" y=\"12\" text-anchor=\"end\">days</text>\n",
        LEFT - 6.0
    );
    let slot = plot_w / months.len() as f64;
    let bar = (slot * 0.3).min(22.0);
    for (i, (month, figures)) in months.iter().zip(&shown).enumerate() {
        let center = LEFT + slot * (i as f64 + 0.5);
        let name = MONTHS[month.month0() as usize];
        if let Some(c) = figures {
            for (offset, class, value) in [
                (-bar - 1.0, "median", c.median_days),
                (1.0, "mean", c.mean_days),
            ] {
                let top_y = y(value.max(0.0));
                put!(
                    out,
                    "<rect class=\"{class}\" x=\"{:.1}\" y=\"{top_y:.1}\" width=\"{bar:.1}\" \
                     height=\"{:.1}\" rx=\"2\"><title>{name} {}: {class} {value:.1} days \
                     ({} completed)</title></rect>\n",
                    center + offset,
                    (TOP + plot_h - top_y).max(0.0),
                    month.year(),
                    c.completed,
                );
            }
        }
        put!(
            out,
            "<text class=\"axis\" x=\"{center:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>\n",
            TOP + plot_h + 16.0
        );
        if i == 0 || month.month() == 1 {
            put!(
                out,
                "<text class=\"axis\" x=\"{center:.1}\" y=\"{:.1}\" \
                 text-anchor=\"middle\">{}</text>\n",
                TOP + plot_h + 31.0,
                month.year()
            );
        }
    }
    put!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c9ced6\"/>\n</svg>\n",
        W - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
}

/// HTML-escapes text for element content and quoted attribute values.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// Standard base64 with padding (for the CSP hash).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            Esc(r#"<a href="x">'&'</a>"#).to_string(),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain é").to_string(), "plain é");
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn reads_the_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lethe_token=lethe_abc; b=2"),
        );
        assert_eq!(cookie(&headers), Some("lethe_abc"));
        assert!(cookie_safe("lethe_0123abcdef"));
        assert!(!cookie_safe("a;b") && !cookie_safe("a b") && !cookie_safe(""));
    }

    #[test]
    fn scales_are_round() {
        assert_eq!(nice_scale(0.0), (1.0, 0.5));
        assert_eq!(nice_scale(31.2), (40.0, 10.0));
        assert_eq!(nice_scale(3.0), (3.0, 1.0));
    }
}
