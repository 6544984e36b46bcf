//! Who may see the dashboard: a token with `requests:read`, from the query once (moved into
//! an HttpOnly cookie, the browser sent back without it), then from the cookie or an
//! `Authorization: Bearer` header. 401 and 403 are pages that say how to pass one.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::document;
use super::{common_headers, html, COOKIE, PATH};
use crate::config::Config;
use crate::http::auth::{self, Principal};
use crate::http::problem::Problem;
use lethe_domain::RequestId;

const SCOPE: &str = "requests:read";

/// `?token=`: check it, keep it in the cookie, and send the browser back without it.
pub(super) fn take_token(config: &Config, token: &str, headers: &HeaderMap) -> Response {
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

/// Who is signed in to the dashboard: a holder of `requests:read`, and the token presented
/// (the bearer header's or the cookie's; empty when auth is off), which the CSRF token of
/// its forms is derived from.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) principal: Principal,
    pub(super) token: String,
}

/// A caller refused: 401 or 403, and whether the cookie is to be cleared. Its response is
/// the page that says how to pass a token.
#[derive(Debug)]
pub(super) struct Refused {
    status: StatusCode,
    clear_cookie: bool,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        denied(self.status, self.clear_cookie)
    }
}

/// The signed-in caller and the request id of a request's route; else the page that refuses
/// (401, 403, or 400 for an id that is not one).
pub(super) fn on_request(
    config: &Config,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Session, RequestId), Box<Response>> {
    let session = session(config, headers).map_err(|r| Box::new(r.into_response()))?;
    let id = crate::http::request_id(id).map_err(|problem| {
        Box::new(super::message_page(
            StatusCode::BAD_REQUEST,
            "Not a request id",
            &super::Esc(&problem.detail).to_string(),
        ))
    })?;
    Ok((session, id))
}

/// The bearer header if there is one, else the cookie, must hold `requests:read`; `Some` is
/// the page that refuses the caller.
pub(super) fn refusal(config: &Config, headers: &HeaderMap) -> Option<Response> {
    session(config, headers)
        .err()
        .map(IntoResponse::into_response)
}

/// The signed-in caller, or why they are refused (401, 403).
pub(super) fn session(config: &Config, headers: &HeaderMap) -> Result<Session, Refused> {
    let (presented, token, from_cookie) = if let Some(value) = headers.get(header::AUTHORIZATION) {
        let mut only = HeaderMap::new();
        only.insert(header::AUTHORIZATION, value.clone());
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        (only, token, false)
    } else if let Some(token) = cookie(headers) {
        let Some(only) = bearer(token) else {
            return Err(Refused {
                status: StatusCode::UNAUTHORIZED,
                clear_cookie: true,
            });
        };
        (only, token.to_owned(), true)
    } else {
        (HeaderMap::new(), String::new(), false)
    };
    auth::require(config, &presented, SCOPE)
        .map(|principal| Session { principal, token })
        .map_err(|problem| {
            let status = status_of(&problem);
            Refused {
                status,
                clear_cookie: from_cookie && status == StatusCode::UNAUTHORIZED,
            }
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
    named_cookie(headers, COOKIE)
}

/// The cookie `name`, from any `Cookie` header.
pub(super) fn named_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
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

pub(super) fn secure(headers: &HeaderMap) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
