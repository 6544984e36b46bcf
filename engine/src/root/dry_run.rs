//! `lethe cleaners test`: what a configured cleaner would erase for a subject, found by the
//! cleaner itself without changing anything.

use std::collections::BTreeMap;

use lethe_domain::{CleanerName, Subject};

use super::cleaners;
use crate::cleaners::{BuildError, CleanerError};
pub use crate::cleaners::{DryRun, DryRunItem};
use crate::config::Config;

/// Why a dry run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("no cleaner is named {0} in the configuration")]
    Unknown(String),
    #[error("{0}")]
    Subject(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cleaner {cleaner}: {source}")]
    Cleaner {
        cleaner: CleanerName,
        #[source]
        source: CleanerError,
    },
}

/// Builds cleaner `name` from `config` and asks it what it would erase for `identifiers`
/// (narrowed to the identifiers the cleaner receives, as an attempt's would be).
pub async fn dry_run(
    config: &Config,
    name: &str,
    identifiers: BTreeMap<String, String>,
) -> Result<DryRun, DryRunError> {
    let subject = Subject::parse(identifiers).map_err(|e| DryRunError::Subject(e.to_string()))?;
    let settings = CleanerName::parse(name.to_owned())
        .ok()
        .and_then(|name| config.cleaner(&name))
        .ok_or_else(|| DryRunError::Unknown(name.to_owned()))?;
    let registry = cleaners(config)?;
    let cleaner = registry
        .get(&settings.name)
        .ok_or_else(|| DryRunError::Unknown(name.to_owned()))?;
    let narrowed = settings.identifiers_of(subject.identifiers());
    cleaner
        .dry_run(&narrowed)
        .await
        .map_err(|source| DryRunError::Cleaner {
            cleaner: settings.name.clone(),
            source,
        })
}
