//! The workflow's one error type.

use crate::app::RequestError;
use crate::cleaners::CleanerError;
use crate::store::StoreError;

/// Why a job could not run to its end now; it is left leased and runs again when its lease
/// runs out.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The application service refused or failed (a domain rejection is not an error here:
    /// it means there is nothing more to do).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The jobs could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A cleaner's attempt could not be made.
    #[error(transparent)]
    Cleaner(#[from] CleanerError),
}
