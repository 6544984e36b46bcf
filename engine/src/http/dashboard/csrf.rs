//! The dashboard's forms against cross-site requests (ADR 35). Three checks on every POST,
//! each enough alone against a browser that sends it:
//!
//! - the session cookie is `SameSite=Strict`, so a browser sends it only with a request from
//!   the dashboard's own site;
//! - `Sec-Fetch-Site`, when the browser sends it, must be `same-origin`, and `Origin`, when
//!   sent, must name the host the request was sent to (`Host`, or `X-Forwarded-Host` behind a
//!   proxy);
//! - the form's hidden `csrf` field must hold HMAC-SHA256 of the session's token under a
//!   subkey of the master key (the same on every instance sharing it, and across restarts):
//!   a page of another site cannot read it, and it belongs to this session only.

use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::app::MasterKey;

/// The hidden field that carries the token.
pub(super) const FIELD: &str = "csrf";

fn mac(key: &MasterKey, session: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.dashboard_form_key())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"dashboard-csrf:");
    mac.update(session.as_bytes());
    mac
}

/// The CSRF token of the session whose token is `session` (hex).
pub(super) fn token(key: &MasterKey, session: &str) -> String {
    hex::encode(mac(key, session).finalize().into_bytes())
}

/// Whether a POST may act: `Err` says why not, in words for the refusal page.
pub(super) fn check(
    key: &MasterKey,
    session: &str,
    headers: &HeaderMap,
    presented: Option<&str>,
) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if !site.eq_ignore_ascii_case("same-origin") {
            return Err(format!(
                "the form was sent from another site (Sec-Fetch-Site: {site}), not from this \
                 dashboard"
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !same_host(origin, headers) {
            return Err(format!(
                "the form was sent from another origin ({origin}), not from this dashboard"
            ));
        }
    }
    let Some(presented) = presented.filter(|p| !p.is_empty()) else {
        return Err(
            "the form carries no CSRF token: reload the request page and send it again".into(),
        );
    };
    let valid = hex::decode(presented)
        .ok()
        .is_some_and(|bytes| mac(key, session).verify_slice(&bytes).is_ok());
    if valid {
        Ok(())
    } else {
        Err(
            "the form's CSRF token is not this session's: reload the request page (signed in \
             again, or the master key changed) and send it again"
                .into(),
        )
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host this request was sent to.
fn same_host(origin: &str, headers: &HeaderMap) -> bool {
    let Some((_, authority)) = origin.split_once("://") else {
        return false; // "null", or not an origin
    };
    ["x-forwarded-host", header::HOST.as_str()]
        .iter()
        .filter_map(|name| headers.get(*name))
        .filter_map(|value| value.to_str().ok())
        .any(|host| host.trim().eq_ignore_ascii_case(authority))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn a_token_belongs_to_its_session_and_key() {
        let key = MasterKey::from_bytes([1; 32]);
        let mine = token(&key, "lethe_a");
        assert_eq!(mine.len(), 64);
        assert_eq!(mine, token(&key, "lethe_a"));
        assert_ne!(mine, token(&key, "lethe_b"));
        assert_ne!(mine, token(&MasterKey::from_bytes([2; 32]), "lethe_a"));
        let headers = HeaderMap::new();
        assert!(check(&key, "lethe_a", &headers, Some(&mine)).is_ok());
        assert!(check(&key, "lethe_b", &headers, Some(&mine)).is_err());
        assert!(check(&key, "lethe_a", &headers, None).is_err());
        assert!(check(&key, "lethe_a", &headers, Some("zz")).is_err());
    }

    #[test]
    fn origin_and_fetch_site_must_be_this_site() {
        let key = MasterKey::from_bytes([1; 32]);
        let good = token(&key, "s");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check(&key, "s", &headers, Some(&good)).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check(&key, "s", &headers, Some(&good)).is_err());
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check(&key, "s", &headers, Some(&good)).is_err());
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check(&key, "s", &headers, Some(&good)).is_err());
    }
}
