//! Bearer tokens with scopes. Tokens are configured as SHA-256 hashes (`[[tokens]]`), so the
//! config never holds a usable secret; a presented token is hashed and looked up. With no
//! tokens configured, auth is off and every caller acts as `anonymous` with every scope (and
//! `serve` refuses to listen beyond loopback).

use axum::http::{header, HeaderMap, StatusCode};

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
pub use crate::config::token_hash;

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

/// Per-token request rate limits: a keyed token bucket (governor) per token hash, with all
/// anonymous callers sharing one bucket. Over the limit: 429 with `Retry-After`.
#[derive(Debug)]
pub struct RateLimits {
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    pub fn new(config: &crate::config::ApiConfig) -> Self {
        let limiter = config
            .rate_per_second
            .and_then(std::num::NonZeroU32::new)
            .map(|rate| {
                let burst = config
                    .burst
                    .and_then(std::num::NonZeroU32::new)
                    .unwrap_or(rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1)))
                    .max(rate);
                governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
            });
        Self { limiter }
    }
}

pub async fn rate_limit(
    axum::extract::State(limits): axum::extract::State<std::sync::Arc<RateLimits>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map_or_else(|| "anonymous".to_owned(), token_hash);
    let Some(limiter) = &limits.limiter else {
        return next.run(request).await;
    };
    match limiter.check_key(&key) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let clock = governor::clock::DefaultClock::default();
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&clock));
            let seconds = wait.as_secs() + 1;
            let mut response = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "urn:lethe:problem:rate-limited",
                "Too many requests",
                format!("this token's request rate is exhausted; retry in {seconds} s"),
            )
            .into_response();
            if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

/// A scope a route requires, as a type, so that [`Caller`] can check it before the body is
/// read.
pub trait Scope: Send + Sync {
    const NAME: &'static str;
}

macro_rules! scopes {
    ($($name:ident = $scope:literal),* $(,)?) => {$(
        #[doc = concat!("The scope `", $scope, "`.")]
        #[derive(Debug)]
        pub struct $name;
        impl Scope for $name {
            const NAME: &'static str = $scope;
        }
    )*};
}

scopes!(
    RequestsWrite = "requests:write",
    RequestsRead = "requests:read",
    AuditRead = "audit:read",
    SuppressionRead = "suppression:read",
    Admin = "admin",
);

/// The authenticated caller, holding the scope `S`. As an extractor from the request's parts
/// it runs before any body extractor, so a caller without a valid token is answered 401 (or
/// 403) whatever its body, and an unauthenticated client cannot make Lethe read a body.
#[derive(Debug)]
pub struct Caller<S>(pub Principal, pub std::marker::PhantomData<S>);

impl<S: Scope> axum::extract::FromRequestParts<super::AppState> for Caller<S> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &super::AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = require(state.requests.config(), &parts.headers, S::NAME)?;
        Ok(Self(principal, std::marker::PhantomData))
    }
}
