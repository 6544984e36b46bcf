//! The dashboard document: key figures, counts by status, the overdue and at-risk lists,
//! cleaner health, time to completion (with its chart, [`super::chart`]), the annual
//! report ([`super::annual`]) and the data inventory's coverage.
//!
//! Every figure carries `data-stat="<path in the GET /v1/stats JSON>"` and
//! `data-value="<the exact number>"`, so a test (or a scraper) reads the page as data.

use std::fmt::{self, Write as _};

use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::RequestStatus;
use lethe_projections::requests::days_left;

use super::annual::annual;
use super::chart::chart;
use super::html::{document_with, Esc};
use crate::app::coverage::CoverageView;
use crate::app::dashboard::Figures;
use crate::app::queries::RequestRow;
use crate::app::stats::StatsView;

/// Months in the completion table beside the chart.
const TABLE_MONTHS: usize = 24;

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
    annual(&mut main, &figures.reports);
    coverage(&mut main, &figures.coverage);
    main.push_str(
        "<p class=\"nav\"><a href=\"/dashboard/requests\">All requests, with filters \
         &rarr;</a></p>\n",
    );
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
pub(super) fn stat(path: &str, value: impl fmt::Display) -> String {
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

pub(super) const fn status_label(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::AwaitingApproval => "Awaiting approval",
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

/// Days left in words, and the class that colours them: late, or soon (at risk: at most
/// `at_risk_days` left).
fn days_text(left: i64, at_risk_days: i64) -> (String, &'static str) {
    let soon = if left <= at_risk_days { "soon" } else { "" };
    match left {
        i64::MIN..=-2 => (format!("{} days late", -left), "late"),
        -1 => ("1 day late".to_owned(), "late"),
        0 => ("due today".to_owned(), soon),
        1 => ("1 day".to_owned(), soon),
        _ => (format!("{left} days"), soon),
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
    out.push_str("<div class=\"scroll\">");
    // Every row here is overdue or at risk.
    table(out, rows, today, u32::MAX);
    out.push_str("</div>\n");
    if total > rows.len() as u64 {
        put!(
            out,
            "<p class=\"note\">The {} most urgent of {total}; all of them: \
             <a href=\"/dashboard/requests?{}=true\">the request list</a>.</p>\n",
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

/// A table of requests, each id linking to its page (`/dashboard/requests/{id}`).
/// Days left are coloured when at most `at_risk_days`.
pub(super) fn table(out: &mut String, rows: &[RequestRow], today: NaiveDate, at_risk_days: u32) {
    out.push_str(
        "<table class=\"requests\">\n<colgroup><col class=\"c-id\">\
         <col class=\"c-law\"><col class=\"c-status\"><col class=\"c-date\">\
         <col class=\"c-date\"><col class=\"c-left\"></colgroup>\n<thead><tr><th>Request</th>\
         <th>Jurisdiction</th><th>Status</th><th>Received</th><th>Deadline</th>\
         <th class=\"num\">Days left</th></tr></thead>\n<tbody>\n",
    );
    for row in rows {
        let left = days_left(row.deadline, today);
        let (text, class) = if row.status.is_closed() {
            ("–".to_owned(), "")
        } else {
            days_text(left, i64::from(at_risk_days))
        };
        put!(
            out,
            "<tr data-request=\"{id}\"><td class=\"id\"><a href=\"/dashboard/requests/{id}\">{id}</a></td>\
             <td>{jurisdiction}</td>\
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
    out.push_str("</tbody>\n</table>\n");
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

/// The data inventory (`GET /v1/coverage`, not a figure of `GET /v1/stats`: its count is
/// `data-gaps`): each gap on its line (`data-gap="<kind>"`, `data-store="<store>"`), or that
/// there is none.
fn coverage(out: &mut String, coverage: &CoverageView) {
    put!(
        out,
        "<section class=\"card\" id=\"coverage\">\n<h2>Data inventory \
         <span class=\"count\" data-gaps=\"{gaps}\">({gaps} gaps in {} declared stores)</span></h2>\n",
        coverage.stores.len(),
        gaps = coverage.gaps.len(),
    );
    if coverage.stores.is_empty() {
        out.push_str(
            "<p class=\"empty\">No stores declared (<code>[[stores]]</code> in lethe.toml).</p>\n\
             </section>\n",
        );
        return;
    }
    if coverage.gaps.is_empty() {
        out.push_str("<p class=\"empty\">Every declared store is covered.</p>\n</section>\n");
        return;
    }
    out.push_str("<ul class=\"gaps\">\n");
    for gap in &coverage.gaps {
        put!(
            out,
            "<li class=\"bad\" data-gap=\"{}\" data-store=\"{}\">{}</li>\n",
            gap.kind(),
            Esc(gap.store()),
            Esc(&gap.message())
        );
    }
    out.push_str(
        "</ul>\n<p class=\"note\">A gap is a declared store that a completed request may leave \
         holding personal data. The same list: <code>GET /v1/coverage</code>, \
         <code>lethe coverage</code>.</p>\n</section>\n",
    );
}
