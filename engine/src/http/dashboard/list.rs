//! The request list (`GET /dashboard/requests`): the filters of `GET /v1/requests` (status,
//! overdue, at risk, jurisdiction, cleaner), read and checked by the same code, as a form; a page of
//! requests in order of receipt, each linking to its page; and the next page by the same
//! cursor.

use std::fmt::Write as _;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use lethe_domain::RequestStatus;

use super::auth::session;
use super::html::{document_with, Esc};
use super::page::{status_label, table};
use super::{error_page, html, message_page};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use crate::http::queries::{checked, from_form};
use crate::http::schema::CLEANER_NAME_PATTERN;
use crate::http::AppState;

#[utoipa::path(
    get,
    path = "/dashboard/requests",
    tag = "service",
    params(FormQuery),
    responses(
        (status = 200, description = "A page of the request list for people (HTML): the filters of GET /v1/requests as a form, each request linking to its page, and a link to the next page", body = String, content_type = "text/html"),
        (status = 401, description = "No valid token: an HTML page explaining how to pass one", body = String, content_type = "text/html"),
        (status = 403, description = "The token lacks the scope requests:read (HTML)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unreachable, or this instance serves no projections (HTML)", body = String, content_type = "text/html"),
        crate::http::responses::DashboardPage,
    ),
    security(("bearer" = ["requests:read"]))
)]
pub async fn requests(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(refused) = session(state.requests.config(), &headers) {
        return refused.into_response();
    }
    let (filter, after, limit) = match from_form(raw.as_deref()).and_then(|q| checked(&q)) {
        Ok(checked) => checked,
        Err(problem) => {
            let field = problem.field.clone().unwrap_or_default();
            return message_page(
                StatusCode::BAD_REQUEST,
                "Invalid filter",
                &format!(
                    "<span data-field=\"{}\">{}</span> <a href=\"/dashboard/requests\">Show \
                     every request</a>.",
                    Esc(&field),
                    Esc(&problem.detail)
                ),
            );
        }
    };
    let page = match state.requests.list(&filter, after, limit).await {
        Ok(page) => page,
        Err(error) => return error_page(error),
    };
    let form = Form::of(raw.as_deref());
    let mut main = String::new();
    main.push_str("<p class=\"nav\"><a href=\"/dashboard\">&larr; Dashboard</a></p>\n");
    main.push_str("<section class=\"card\" id=\"requests\">\n<h2>Requests</h2>\n");
    form.render(&mut main);
    if page.rows.is_empty() {
        main.push_str("<p class=\"empty\">No request matches these filters.</p>\n");
    } else {
        let at_risk_days = state.requests.config().policy.at_risk_days;
        table(&mut main, &page.rows, Utc::now().date_naive(), at_risk_days);
    }
    main.push_str("<p class=\"pages\">");
    if after.is_some() {
        put!(
            main,
            "<a href=\"/dashboard/requests{}\" rel=\"first\">First page</a> ",
            form.query_with(None)
        );
    }
    if let Some(next) = page.next_cursor {
        let next = next.to_string();
        put!(
            main,
            "<a href=\"/dashboard/requests{}\" rel=\"next\" data-next-cursor=\"{}\">Next page \
             &rarr;</a>",
            form.query_with(Some(&next)),
            Esc(&next)
        );
    }
    main.push_str(
        "</p>\n<p class=\"note\">In order of receipt. The same list as JSON: <code>GET \
         /v1/requests</code>, with the same filters.</p>\n</section>\n",
    );
    html(
        StatusCode::OK,
        document_with("Requests · Lethe", "", "Requests", &main),
    )
}

/// The query of `GET /dashboard/requests` as `/openapi.json` states it: `GET /v1/requests`'s,
/// but for the filters a form sends empty when unset
/// ([`crate::http::queries::FORM_FIELDS`]), for which the empty string is valid and no
/// filter. Parsed as `GET /v1/requests` parses its query.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by `from_form` as a `ListQuery`; here for the document only
pub struct FormQuery {
    /// Only requests in this status; empty: any.
    #[param(schema_with = status_or_empty)]
    status: Option<String>,
    /// Only requests of this jurisdiction; empty: any.
    #[param(schema_with = crate::http::schema::query_text)]
    jurisdiction: Option<String>,
    /// Only open requests whose deadline is at most `[policy] at_risk_days` away.
    at_risk: Option<bool>,
    /// Only open requests past their deadline.
    overdue: Option<bool>,
    needs_attention: Option<bool>,
    /// Only requests with this cleaner planned that has not yet succeeded or been skipped;
    /// empty: any.
    #[param(schema_with = cleaner_or_empty)]
    cleaner: Option<String>,
    /// Received at or after (RFC 3339 time or a date).
    #[param(schema_with = crate::http::schema::time_or_date)]
    received_from: Option<String>,
    /// Received before (RFC 3339 time or a date).
    #[param(schema_with = crate::http::schema::time_or_date)]
    received_to: Option<String>,
    /// The `data-next-cursor` of the previous page.
    #[param(schema_with = crate::http::schema::request_id)]
    cursor: Option<String>,
    /// At most 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

fn status_or_empty() -> Schema {
    let mut values = vec![""];
    values.extend(RequestStatus::ALL.map(|status| status.as_str()));
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

fn cleaner_or_empty() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^$|{CLEANER_NAME_PATTERN}")))
        .into()
}

/// The form's values as sent (so the page shows the filters it applies).
#[derive(Debug, Default)]
struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    fn of(raw: Option<&str>) -> Self {
        Self {
            pairs: url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .filter(|(name, value)| !value.is_empty() && name != "cursor")
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// `?filters[&cursor=...]` (HTML-escaped, for an attribute), or "" with neither.
    fn query_with(&self, cursor: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(&self.pairs);
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        let query = query.finish();
        if query.is_empty() {
            String::new()
        } else {
            format!("?{}", Esc(&query))
        }
    }

    fn render(&self, out: &mut String) {
        out.push_str(
            "<form method=\"get\" action=\"/dashboard/requests\" class=\"filters\">\
             <label>Status <select name=\"status\"><option value=\"\">any</option>",
        );
        for status in RequestStatus::ALL {
            put!(
                out,
                "<option value=\"{value}\"{selected}>{label}</option>",
                value = status.as_str(),
                selected = if self.get("status") == status.as_str() {
                    " selected"
                } else {
                    ""
                },
                label = status_label(status),
            );
        }
        put!(
            out,
            "</select></label>\
             <label>Jurisdiction <input name=\"jurisdiction\" value=\"{}\" size=\"8\" \
             placeholder=\"any\"></label>\
             <label title=\"Requests with this cleaner planned and not yet succeeded or \
             skipped\">Cleaner <input name=\"cleaner\" value=\"{}\" size=\"10\" \
             placeholder=\"any\"></label>",
            Esc(self.get("jurisdiction")),
            Esc(self.get("cleaner"))
        );
        for (name, label) in [("overdue", "Overdue"), ("at_risk", "At risk")] {
            put!(
                out,
                "<label><input type=\"checkbox\" name=\"{name}\" value=\"true\"{}> {label}</label>",
                if self.get(name) == "true" {
                    " checked"
                } else {
                    ""
                }
            );
        }
        if !self.get("limit").is_empty() {
            put!(
                out,
                "<input type=\"hidden\" name=\"limit\" value=\"{}\">",
                Esc(self.get("limit"))
            );
        }
        out.push_str(
            "<button type=\"submit\">Filter</button>\
             <a href=\"/dashboard/requests\">Clear</a></form>\n",
        );
    }
}
