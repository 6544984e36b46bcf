//! Cleaner planning: which configured cleaners a request is sent to, by their routing rules
//! (`match` in lethe.toml), each with the declared stores (`[[stores]]`) it erases.

use lethe_domain::event::PlannedCleaner;
use lethe_domain::state::Request;

use crate::config::Config;

/// The cleaners that the routing rules select for `request`, in configuration order.
pub fn plan_cleaners(config: &Config, request: &Request) -> Vec<PlannedCleaner> {
    config
        .cleaners
        .iter()
        .filter(|c| {
            c.routing.matches(
                &request.jurisdiction,
                request.source.as_deref(),
                &request.tags,
            )
        })
        .map(|c| PlannedCleaner {
            name: c.name.clone(),
            max_attempts: c.retry.max_attempts,
            stores: config
                .stores
                .iter()
                .filter(|store| store.cleaners.contains(&c.name))
                .map(|store| store.name.clone())
                .collect(),
        })
        .collect()
}
