//! `kind = "redis"`: Lethe deletes the subject's keys and hash fields itself, by the keys and patterns of the cleaner's
//! settings (docs/CLEANERS.md).

use async_trait::async_trait;

use super::{Attempt, BuildError, Cleaner, CleanerError, Outcome};
use crate::config::{CleanerConfig, RedisCleanerConfig};

#[derive(Debug)]
pub struct RedisCleaner {}

impl RedisCleaner {
    pub fn new(cleaner: &CleanerConfig, settings: &RedisCleanerConfig) -> Result<Self, BuildError> {
        let _ = settings;
        Err(BuildError {
            cleaner: cleaner.name.clone(),
            message: "kind = \"redis\" is not available in this build".to_owned(),
        })
    }
}

#[async_trait]
impl Cleaner for RedisCleaner {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn needs_subject(&self) -> bool {
        true
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        Ok(attempt.failed("kind = \"redis\" is not available in this build"))
    }
}
