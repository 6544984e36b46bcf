//! A cleaner's `match`: which requests it is told about.

use lethe_domain::Jurisdiction;
use serde::Deserialize;

/// Selects requests by jurisdiction, source and tags; an absent list matches everything, and
/// a request must match every list given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    pub jurisdictions: Option<Vec<Jurisdiction>>,
    pub sources: Option<Vec<String>>,
    /// Matches when the request has at least one of these tags.
    pub tags: Option<Vec<String>>,
}

impl RoutingRule {
    pub fn matches(
        &self,
        jurisdiction: &Jurisdiction,
        source: Option<&str>,
        tags: &[String],
    ) -> bool {
        let jurisdiction_ok = self
            .jurisdictions
            .as_ref()
            .is_none_or(|list| list.contains(jurisdiction));
        let source_ok = self
            .sources
            .as_ref()
            .is_none_or(|list| source.is_some_and(|s| list.iter().any(|x| x == s)));
        let tags_ok = self
            .tags
            .as_ref()
            .is_none_or(|list| tags.iter().any(|t| list.contains(t)));
        jurisdiction_ok && source_ok && tags_ok
    }
}
