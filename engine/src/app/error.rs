//! The application layer's one error type: what a command or query can fail with, in terms the
//! doors (HTTP, CLI) can answer without knowing the store.

use lethe_domain::error::InvalidInput;
use lethe_domain::{DomainError, RequestId};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("no request {0}")]
    NotFound(RequestId),
    /// The request exists but had not been received at the point of its history asked for.
    #[error("request {id} had not been received at {at}")]
    NotYet { id: RequestId, at: String },
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// A receipt was asked of a request that is not completed.
    #[error("request {0} is not completed: it has no receipt yet")]
    NotCompleted(RequestId),
    #[error("the request kept changing while the command was decided; try again")]
    Contended,
    /// The database cannot be reached now ([`StoreError::Unavailable`]): nothing is wrong
    /// with the call; try again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A cleaner reported progress on an attempt whose result is not awaited: the result
    /// came, the attempt's deadline passed, or it was never made.
    #[error("no result of attempt {attempt} of cleaner {cleaner} is awaited: it came, its deadline passed, or the attempt was never made")]
    NotAwaited {
        cleaner: lethe_domain::CleanerName,
        attempt: u32,
    },
    /// A list, the stats or the dashboard was asked of a process that serves no projections.
    #[error("this instance serves no projections")]
    NoProjections,
    /// A suppression was asked of an instance without `[suppression]` in its configuration.
    #[error("suppression is not enabled: lethe.toml has no [suppression] section")]
    SuppressionOff,
    /// An export could not be written out.
    #[error("cannot write: {0}")]
    Output(String),
    /// Any other failure of the store: a fault, logged and answered generically.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RequestError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => Self::Unavailable(message),
            other => Self::Store(other),
        }
    }
}

impl From<std::io::Error> for RequestError {
    fn from(error: std::io::Error) -> Self {
        Self::Output(error.to_string())
    }
}

impl From<csv::Error> for RequestError {
    fn from(error: csv::Error) -> Self {
        Self::Output(error.to_string())
    }
}
