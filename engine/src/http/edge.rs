//! The edge of the API, where a hostile client meets it first: Lethe's own limits on the
//! request line and headers, a check of every query string and path, and the guarantee that
//! every error Lethe answers is RFC 9457 `application/problem+json` (see ADR 13).
//!
//! hyper's own limits are set above these (see [`super::server`]), so a request hyper can
//! parse meets Lethe's limit first and is refused with a problem rather than hyper's bare
//! status line.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode;

use super::problem::Problem;

/// The longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;
/// The most bytes of header fields (names and values) a request may carry.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses a request whose target or headers are over Lethe's limits, or whose path or query
/// string holds what no parameter can: bytes that are not UTF-8 once percent-decoded, or
/// control characters (a NUL would otherwise reach the database).
pub async fn guard(request: Request, next: Next) -> Response {
    match check(&request) {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
}

fn check(request: &Request) -> Result<(), Problem> {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(Problem::new(
            StatusCode::URI_TOO_LONG,
            "urn:lethe:problem:uri-too-long",
            "URI too long",
            format!("the path and query must be at most {MAX_URI_BYTES} bytes"),
        ));
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "urn:lethe:problem:headers-too-large",
            "Request header fields too large",
            format!(
                "at most {MAX_HEADERS} header fields of at most {MAX_HEADER_BYTES} bytes in all \
                 (got {} fields, {bytes} bytes)",
                headers.len()
            ),
        ));
    }
    for segment in uri.path().split('/') {
        decoded("path", segment.as_bytes())?;
    }
    if let Some(query) = uri.query() {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decoded("query", name.as_bytes())?;
            decoded(&name, value.as_bytes())?;
        }
    }
    Ok(())
}

/// One `application/x-www-form-urlencoded` component, decoded as the query extractor will
/// decode it ('+' is a space), which must be UTF-8 without control characters.
fn decoded(field: &str, raw: &[u8]) -> Result<String, Problem> {
    let plus_is_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_decode(&plus_is_space).collect();
    let text = String::from_utf8(bytes).map_err(|_| {
        Problem::invalid(
            field,
            "is not UTF-8 once percent-decoded (an overlong or invalid sequence)",
        )
    })?;
    if text.chars().any(char::is_control) {
        return Err(Problem::invalid(
            field,
            "must not contain control characters (such as %00)",
        ));
    }
    Ok(text)
}

/// The route table's answer when no route matches.
pub async fn not_found(method: Method, uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route {method} {}", uri.path()))
}

/// Turns any error response that is not yet a problem — from axum (405 with its `Allow`, a
/// rejection's text), tower (the time-out's 408) or a layer — into one, keeping its status
/// and headers. The dashboard's pages for people (`text/html`) are left as they are.
pub async fn problems(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/problem+json") || content_type.starts_with("text/html")
    {
        return response;
    }
    let plain = content_type.starts_with("text/plain");
    let (mut parts, body) = response.into_parts();
    // A rejection's text names what was wrong; anything else (or anything long) is not kept.
    let said = if plain {
        axum::body::to_bytes(body, 1024)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|t| !t.is_empty())
    } else {
        None
    };
    let detail = said.unwrap_or_else(|| default_detail(status, &method, &path));
    let (kind, title) = kind_of(status);
    let problem = Problem::new(status, kind, title, detail).into_response();
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    drop(problem_parts);
    Response::from_parts(parts, Body::new(problem_body))
}

fn kind_of(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::NOT_FOUND => ("urn:lethe:problem:not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("urn:lethe:problem:method-not-allowed", "Method not allowed")
        }
        StatusCode::REQUEST_TIMEOUT => ("urn:lethe:problem:timeout", "Request timeout"),
        StatusCode::PAYLOAD_TOO_LARGE => ("urn:lethe:problem:too-large", "Body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "urn:lethe:problem:unsupported-media-type",
            "Unsupported media type",
        ),
        // RFC 9457: "about:blank" says the title is the status's own phrase.
        _ => ("about:blank", status.canonical_reason().unwrap_or("Error")),
    }
}

fn default_detail(status: StatusCode, method: &Method, path: &str) -> String {
    match status {
        StatusCode::NOT_FOUND => format!("no route {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("{method} is not allowed on {path}; the Allow header lists what is")
        }
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request was not complete within {} s",
            super::REQUEST_TIMEOUT.as_secs()
        ),
        _ => status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(uri: &str) -> Option<String> {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        check(&request).err().map(|p| p.field.unwrap_or_default())
    }

    #[test]
    fn query_values_must_be_clean_utf8() {
        assert_eq!(
            field("/v1/requests?jurisdiction=%00").as_deref(),
            Some("jurisdiction")
        );
        assert_eq!(
            field("/v1/requests?jurisdiction=a%C0%80").as_deref(),
            Some("jurisdiction")
        );
        assert_eq!(
            field("/v1/requests?status=x&limit=%FF").as_deref(),
            Some("limit")
        );
        assert_eq!(field("/v1/requests?%FF=1").as_deref(), Some("query"));
        assert_eq!(field("/v1/requests/%00/history").as_deref(), Some("path"));
        assert_eq!(field("/v1/requests/%C0%80").as_deref(), Some("path"));
        assert_eq!(
            field("/v1/requests?jurisdiction=gdpr&status=on+hold&x=%C3%A9"),
            None
        );
        assert_eq!(field("/v1/requests?flag&=&&"), None);
    }
}
