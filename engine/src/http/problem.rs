//! RFC 9457 problem details: every error the API returns, as `application/problem+json`, with
//! the offending field named where there is one. Infrastructure failures are logged once here
//! and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lethe_domain::error::InvalidInput;
use lethe_domain::DomainError;
use serde::Serialize;

use crate::requests::RequestError;
use crate::store::StoreError;

/// RFC 9457 problem details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "urn:lethe:problem:invalid-input")]
    pub kind: &'static str,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The input field at fault, e.g. `subject.email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
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

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:lethe:problem:unavailable",
            "Service unavailable",
            "the database is unreachable; try again shortly",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
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
            RequestError::Rejected(e) => rejected(&e),
            RequestError::Contended => Self::new(
                StatusCode::CONFLICT,
                "urn:lethe:problem:conflict",
                "Conflict",
                "the request kept changing while the command was decided; try again",
            ),
            RequestError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => {
                tracing::error!(error = %error, "database unavailable");
                Self::unavailable()
            }
            _ => {
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
