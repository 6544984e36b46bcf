//! The dashboard's annual report section: last year's figures (the ones a business discloses)
//! and this year's so far, per jurisdiction. Every figure carries
//! `data-report="<year>.<jurisdiction>.<field of GET /v1/reports/annual>"` and its exact
//! `data-value` (an absent median or mean has no figure).

use std::fmt::Write as _;

use super::html::Esc;
use crate::app::annual_report::AnnualReport;

/// ` data-report="year.jurisdiction.field" data-value="value"`.
fn figure(year: i32, jurisdiction: &str, field: &str, value: impl std::fmt::Display) -> String {
    format!(
        " data-report=\"{year}.{}.{field}\" data-value=\"{value}\"",
        Esc(jurisdiction)
    )
}

/// The section: one table per year, one row per jurisdiction.
pub(super) fn annual(out: &mut String, reports: &[AnnualReport]) {
    out.push_str(
        "<section class=\"card\" id=\"annual\">\n<h2>Annual report \
         <span class=\"count\">(requests received in the year, and what came of them)</span></h2>\n",
    );
    for (i, report) in reports.iter().enumerate() {
        let so_far = if i + 1 == reports.len() {
            " so far"
        } else {
            ""
        };
        put!(out, "<h3>{}{so_far}</h3>\n", report.year);
        if report.jurisdictions.is_empty() {
            out.push_str("<p class=\"empty\">No request was received.</p>\n");
            continue;
        }
        out.push_str(
            "<table>\n<thead><tr><th>Jurisdiction</th><th class=\"num\">Received</th>\
             <th class=\"num\">Complied in whole</th><th class=\"num\">In part</th>\
             <th class=\"num\">Denied</th><th class=\"num\">Cancelled</th>\
             <th class=\"num\">Open</th><th class=\"num\">Median days</th>\
             <th class=\"num\">Mean days</th></tr></thead>\n<tbody>\n",
        );
        for j in &report.jurisdictions {
            let name = j.jurisdiction.as_str();
            let count = |field: &str, value: u64| {
                format!(
                    "<td class=\"num\"{}>{value}</td>",
                    figure(report.year, name, field, value)
                )
            };
            let days = |field: &str, value: Option<f64>| match value {
                Some(d) => format!(
                    "<td class=\"num\"{}>{d:.1}</td>",
                    figure(report.year, name, field, d)
                ),
                None => "<td class=\"num\">–</td>".to_owned(),
            };
            put!(
                out,
                "<tr><td>{}</td>{}{}{}{}{}{}{}{}</tr>\n",
                Esc(name),
                count("received", j.received),
                count("complied_in_whole", j.complied_in_whole),
                count("complied_in_part", j.complied_in_part),
                count("denied", j.denied),
                count("cancelled", j.cancelled),
                count("open", j.open),
                days("median_days_to_respond", j.median_days_to_respond),
                days("mean_days_to_respond", j.mean_days_to_respond),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str(
        "<p class=\"note\">Complied in whole: completed with every cleaner succeeded; in part: \
         completed with some skipped; denied: rejected. Days to respond: calendar days (UTC) from \
         receipt to completion or denial. As JSON or CSV: \
         <code>GET /v1/reports/annual?year=</code>.</p>\n</section>\n",
    );
}
