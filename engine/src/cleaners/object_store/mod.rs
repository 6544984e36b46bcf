//! `kind = "object_store"`: Lethe deletes the subject's objects itself, by the key templates and prefixes of the cleaner's
//! settings (docs/CLEANERS.md).

use async_trait::async_trait;

use super::{Attempt, BuildError, Cleaner, CleanerError, Outcome};
use crate::config::{CleanerConfig, ObjectStoreCleanerConfig};

#[derive(Debug)]
pub struct ObjectStoreCleaner {}

impl ObjectStoreCleaner {
    pub fn new(
        cleaner: &CleanerConfig,
        settings: &ObjectStoreCleanerConfig,
    ) -> Result<Self, BuildError> {
        let _ = settings;
        Err(BuildError {
            cleaner: cleaner.name.clone(),
            message: "kind = \"object_store\" is not available in this build".to_owned(),
        })
    }
}

#[async_trait]
impl Cleaner for ObjectStoreCleaner {
    fn kind(&self) -> &'static str {
        "object_store"
    }

    fn needs_subject(&self) -> bool {
        true
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        Ok(attempt.failed("kind = \"object_store\" is not available in this build"))
    }
}
