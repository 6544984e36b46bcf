//! RFC 9457 problem details: every error the API returns, as `application/problem+json`, with
//! the offending field named where there is one. Infrastructure failures are logged once here
//! and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lethe_domain::error::InvalidInput;
use lethe_domain::DomainError;
use serde::Serialize;

use crate::app::RequestError;

/// RFC 9457 problem details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "urn:lethe:problem:invalid-input")]
    pub kind: &'static str,
    #[schema(value_type = String)]
    pub title: &'static str,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    pub detail: String,
    /// The input field at fault, e.g. `subject.email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Sent as the `Retry-After` header (seconds), not in the body.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        let detail = format!("{field}: {}", detail.into());
        Self {
            field: Some(field),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "urn:lethe:problem:invalid-input",
                "Invalid input",
                detail,
            )
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "urn:lethe:problem:forbidden",
            "Forbidden",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "urn:lethe:problem:not-found",
            "Not found",
            detail,
        )
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "urn:lethe:problem:internal",
            "Internal error",
            "something went wrong on our side; it has been logged",
        )
    }

    /// The database cannot be reached now. A retry is safe even for a submission whose
    /// commit was cut off: it is recognised by its subject, `Idempotency-Key` or
    /// `external_id` (ADR 14).
    pub(crate) fn database_unavailable() -> Self {
        Self {
            retry_after: Some(DATABASE_RETRY_AFTER_SECS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:lethe:problem:unavailable",
                "Service unavailable",
                "the database is unreachable; nothing was lost: try again after the \
                 Retry-After seconds (a repeated submission returns the request it made, if \
                 it was recorded)",
            )
        }
    }
}

/// The `Retry-After` of a database outage: short, since answering it costs Lethe little and
/// most outages (a restart, a fail-over) last seconds.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 1;

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<InvalidInput> for Problem {
    fn from(e: InvalidInput) -> Self {
        Self::invalid(e.field, e.message)
    }
}

impl From<RequestError> for Problem {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::Invalid(e) => e.into(),
            RequestError::NotFound(id) => Self::not_found(format!("no request {id}")),
            RequestError::NotYet { .. } => Self::not_found(error.to_string()),
            RequestError::Rejected(e) => rejected(&e),
            RequestError::Contended => Self::new(
                StatusCode::CONFLICT,
                "urn:lethe:problem:conflict",
                "Conflict",
                "the request kept changing while the command was decided; try again",
            ),
            RequestError::Unavailable(_) => {
                tracing::warn!(error = %error, "database unavailable");
                Self::database_unavailable()
            }
            RequestError::NoProjections => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:lethe:problem:unavailable",
                "Service unavailable",
                "this instance serves no projections",
            ),
            RequestError::NotCompleted(_) => Self::new(
                StatusCode::CONFLICT,
                "urn:lethe:problem:not-completed",
                "Not completed",
                error.to_string(),
            ),
            RequestError::SuppressionOff => Self::not_found(error.to_string()),
            RequestError::NotAwaited { .. } => Self::new(
                StatusCode::CONFLICT,
                "urn:lethe:problem:not-awaited",
                "No result awaited",
                error.to_string(),
            ),
            RequestError::Store(_) | RequestError::Output(_) => {
                tracing::error!(error = %error, "store failure");
                Self::internal()
            }
        }
    }
}

/// A domain rejection: the command is well-formed but not allowed in the request's state.
fn rejected(error: &DomainError) -> Problem {
    let status = match error {
        DomainError::ReasonRequired
        | DomainError::EmptyExtension
        | DomainError::ExtensionExceedsMaximum { .. }
        | DomainError::UnknownCleaner { .. }
        | DomainError::UnknownAttempt { .. }
        | DomainError::UnknownReminder { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::CONFLICT,
    };
    Problem::new(
        status,
        "urn:lethe:problem:rejected",
        "Not allowed in the request's state",
        error.to_string(),
    )
}
