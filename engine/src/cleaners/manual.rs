//! `kind = "manual"` cleaners: a person erases the data and confirms it through the result
//! endpoint or `lethe confirm`; an attempt only waits for that.

use async_trait::async_trait;

use super::{Attempt, Cleaner, CleanerError, Outcome};

#[derive(Debug, Clone, Copy, Default)]
pub struct ManualCleaner;

#[async_trait]
impl Cleaner for ManualCleaner {
    fn kind(&self) -> &'static str {
        "manual"
    }

    async fn attempt(&self, _attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        Ok(Outcome::Awaiting)
    }
}
