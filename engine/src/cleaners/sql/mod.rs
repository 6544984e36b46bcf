//! `kind = "sql"`: Lethe erases the subject's rows itself, with the statements of the cleaner's
//! settings, in one transaction (docs/CLEANERS.md).

pub mod connect;
pub mod params;

use async_trait::async_trait;

use super::{Attempt, BuildError, Cleaner, CleanerError, Outcome};
use crate::config::{CleanerConfig, SqlCleanerConfig};

#[derive(Debug)]
pub struct SqlCleaner {}

impl SqlCleaner {
    pub fn new(cleaner: &CleanerConfig, settings: &SqlCleanerConfig) -> Result<Self, BuildError> {
        let _ = settings;
        Err(BuildError {
            cleaner: cleaner.name.clone(),
            message: "kind = \"sql\" is not available in this build".to_owned(),
        })
    }
}

#[async_trait]
impl Cleaner for SqlCleaner {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn needs_subject(&self) -> bool {
        true
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        Ok(attempt.failed("kind = \"sql\" is not available in this build"))
    }
}
