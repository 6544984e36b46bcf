//! What a cleaner's settings ask of the workflow before a call: `after` (the cleaners of the
//! same request that must have succeeded or been skipped first) and `identifiers` (the only
//! identifiers of the subject it receives). ADR 27.

use std::collections::BTreeMap;

use lethe_domain::state::{CleanerState, Phase, Request};
use lethe_domain::CleanerName;

use crate::config::{CleanerConfig, Config};

/// The `detail` of an attempt recorded as succeeded without a call: the cleaner receives none
/// of the identifiers the subject has, so there is nothing it could erase.
pub const NO_IDENTIFIERS: &str = "the subject has none of the identifiers this cleaner receives";

/// Whether `cleaner` must wait for this request: one of the cleaners its `after` names is in
/// the request's plan and has neither succeeded nor been skipped. A named cleaner the request
/// is not routed to does not hold it back.
pub fn blocked(config: &Config, request: &Request, cleaner: &CleanerName) -> bool {
    let Some(settings) = config.cleaner(cleaner) else {
        return false;
    };
    let Phase::Cleaning(cleaning) = &request.phase else {
        return false;
    };
    settings.after.iter().any(|before| {
        cleaning.cleaners.get(before).is_some_and(|progress| {
            !matches!(
                progress.state,
                CleanerState::Succeeded { .. } | CleanerState::Skipped { .. }
            )
        })
    })
}

/// The configured cleaners that name `done` in their `after`: the ones its success or skip
/// may let go.
pub fn waiting_for<'a>(
    config: &'a Config,
    done: &'a CleanerName,
) -> impl Iterator<Item = &'a CleanerConfig> + 'a {
    config
        .cleaners
        .iter()
        .filter(move |c| c.after.contains(done))
}

/// The identifiers of `subject` that `cleaner` receives (all of them for a cleaner no longer
/// configured: its attempt fails before any call).
pub fn identifiers_for(
    config: &Config,
    cleaner: &CleanerName,
    subject: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    config
        .cleaner(cleaner)
        .map_or_else(|| subject.clone(), |c| c.identifiers_of(subject))
}
