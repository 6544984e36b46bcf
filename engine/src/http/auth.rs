//! Bearer tokens with scopes. Tokens are configured as SHA-256 hashes (`[[tokens]]`), so the
//! config never holds a usable secret; a presented token is hashed and looked up. With no
//! tokens configured, auth is off and every caller acts as `anonymous` with every scope (and
//! `serve` refuses to listen beyond loopback).

use axum::http::{header, HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::problem::Problem;
use crate::config::Config;

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `token:<name>`, or `anonymous` when auth is off.
    pub actor: String,
    scopes: Vec<String>,
    all_scopes: bool,
}

impl Principal {
    pub fn has(&self, scope: &str) -> bool {
        self.all_scopes || self.scopes.iter().any(|s| s == scope)
    }
}

/// Lowercase hex SHA-256 of a token, as configured in `[[tokens]] sha256`.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Authenticates the request's bearer token; `None` when it carries none.
pub fn principal(config: &Config, headers: &HeaderMap) -> Result<Option<Principal>, Problem> {
    if config.tokens.is_empty() {
        return Ok(Some(Principal {
            actor: "anonymous".to_owned(),
            scopes: Vec::new(),
            all_scopes: true,
        }));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    let hash = token_hash(token);
    // Comparing hashes of the presented token: timing reveals nothing about a stored token.
    let found = config
        .tokens
        .iter()
        .find(|t| t.sha256 == hash)
        .ok_or_else(unauthorized)?;
    Ok(Some(Principal {
        actor: format!("token:{}", found.name),
        scopes: found.scopes.clone(),
        all_scopes: false,
    }))
}

/// The caller, who must hold `scope`.
pub fn require(config: &Config, headers: &HeaderMap, scope: &str) -> Result<Principal, Problem> {
    let principal = principal(config, headers)?.ok_or_else(unauthorized)?;
    if principal.has(scope) {
        Ok(principal)
    } else {
        Err(Problem::forbidden(format!(
            "this token lacks the scope {scope}"
        )))
    }
}

fn unauthorized() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "urn:lethe:problem:unauthorized",
        "Unauthorized",
        "send a valid token as Authorization: Bearer <token>",
    )
}
