//! The error answers routes share, as groups for `#[utoipa::path(responses(...))]`, so that
//! every operation documents each status it can answer, with the same words everywhere.
//! Every error is an RFC 9457 problem (`application/problem+json`, the `Problem` schema).

use std::collections::BTreeMap;

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{Ref, RefOr};
use utoipa::IntoResponses;

fn problem_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build()
}

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", problem_content())
        .build()
        .into()
}

fn group(responses: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    responses
        .iter()
        .map(|(status, description)| (status.to_string(), problem(description)))
        .collect()
}

/// What any route may answer, whatever it does: the layers around them all check the request
/// line and headers, time the request out, and limit each caller's rate.
#[derive(Debug)]
pub struct Service;

impl IntoResponses for Service {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        group(&[
            (
                400,
                "Invalid input, the field named (a path or query value that is not UTF-8 or \
                 holds a control character, or a parameter of the route)",
            ),
            (408, "The request was not complete within 30 s"),
            (414, "The path and query are over 8 KiB"),
            (
                429,
                "The caller's request rate (`[api] rate_per_second`) is exhausted; see \
                 Retry-After",
            ),
            (431, "Over 100 header fields, or over 32 KiB of them"),
        ])
    }
}

/// A route that needs a token with a scope.
#[derive(Debug)]
pub struct Guarded;

impl IntoResponses for Guarded {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = Service::responses();
        responses.extend(group(&[
            (401, "No valid token (`Authorization: Bearer <token>`)"),
            (403, "The token lacks the scope"),
        ]));
        responses
    }
}

/// A route that reads or writes the database.
#[derive(Debug)]
pub struct Stored;

impl IntoResponses for Stored {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        group(&[
            (500, "An internal failure (logged)"),
            (
                503,
                "The database is unreachable, or this instance serves no projections",
            ),
        ])
    }
}

/// A guarded route on one request that takes parameters: a bad one is named (400), an
/// unknown request is 404.
#[derive(Debug)]
pub struct OneRequest;

impl IntoResponses for OneRequest {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = Guarded::responses();
        responses.extend(Stored::responses());
        responses.extend(group(&[
            (400, "Invalid input, the field named"),
            (404, "No such request"),
        ]));
        responses
    }
}

/// A command on one request: [`OneRequest`], plus the refusals of the request's state.
#[derive(Debug)]
pub struct Command;

impl IntoResponses for Command {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = OneRequest::responses();
        responses.extend(group(&[
            (
                409,
                "Not allowed in the request's state, or the request kept changing (try again)",
            ),
            (
                422,
                "Refused by a rule: an unknown cleaner or attempt, an empty extension or one \
                 beyond the jurisdiction's maximum, a missing reason",
            ),
        ]));
        responses
    }
}

/// A route that reads a JSON body: over 64 KiB is 413.
#[derive(Debug)]
pub struct JsonBody;

impl IntoResponses for JsonBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        group(&[
            (400, "Invalid input, the field named"),
            (413, "The body is over 64 KiB"),
        ])
    }
}

/// What the layers around every route answer, for the dashboard's pages for people: a bad id,
/// filter or form of the page is an HTML page naming it; what the edge refuses first is a
/// problem.
#[derive(Debug)]
pub struct DashboardPage;

impl IntoResponses for DashboardPage {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = Service::responses();
        responses.insert(
            "400".to_owned(),
            page_or_problem(
                "A malformed request id, filter or form field, or an action not confirmed: a \
                 page naming it (HTML); or a path or query the edge refuses (a problem)",
            ),
        );
        responses
    }
}

/// The answers of the cancel page (`GET /v1/requests/{id}/cancel`), a page for people: every
/// outcome is an HTML page, but for what the layers around every route refuse first.
#[derive(Debug)]
pub struct CancelPage;

/// An answer that is an HTML page or, from the layers around the route, a problem.
fn page_or_problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content("text/html", ContentBuilder::new().build())
        .content("application/problem+json", problem_content())
        .build()
        .into()
}

fn page(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content("text/html", ContentBuilder::new().build())
        .build()
        .into()
}

impl IntoResponses for CancelPage {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = Service::responses();
        responses.insert(
            "400".to_owned(),
            page_or_problem(
                "A malformed request id (an HTML page), or a path or query the edge refuses \
                 (a problem)",
            ),
        );
        for (status, description) in [
            (401, "No token in the link, and no admin bearer token"),
            (403, "The token does not match this request"),
            (404, "No such request"),
            (
                409,
                "The request can no longer be cancelled: already cancelled, rejected, or its \
                 grace period is over",
            ),
            (500, "An internal failure (logged)"),
            (503, "The database is unreachable"),
        ] {
            responses.insert(status.to_string(), page(description));
        }
        responses
    }
}
