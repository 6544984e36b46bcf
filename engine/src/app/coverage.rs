//! Data inventory and coverage (`lethe coverage`, `GET /v1/coverage`, the dashboard's panel,
//! the warnings of `serve`): the declared stores (`[[stores]]`) read against the cleaners'
//! settings, and the gaps between them. Configuration only: no database is read.
//!
//! Three kinds of gap (docs/OPERATIONS.md#data-inventory-and-coverage):
//! - a store no cleaner erases;
//! - an identifier kind a store holds that none of its cleaners receives (`identifiers`);
//! - a jurisdiction (every configured one) or a source (every one a cleaner's `match` names,
//!   and requests without a source) for which none of the store's cleaners' routing rules
//!   selects anything. Each dimension is read on its own; `tags` select some requests of every
//!   jurisdiction and source, so they never make a gap here.

use std::collections::BTreeSet;

use lethe_domain::Jurisdiction;
use serde::Serialize;

use super::Requests;
use crate::config::{CleanerConfig, Config, StoreConfig};

/// The inventory and its gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CoverageView {
    /// The declared stores, in the order of lethe.toml.
    pub stores: Vec<StoreView>,
    /// Every gap found, store by store; empty when the inventory is covered.
    pub gaps: Vec<Gap>,
}

/// One declared store, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoreView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The identifier kinds it holds.
    pub identifiers: Vec<String>,
    /// The cleaners that erase it.
    pub cleaners: Vec<String>,
}

/// A way in which a declared store may keep personal data after a request completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gap {
    /// No cleaner erases the store.
    NoCleaner { store: String },
    /// The store holds this identifier kind and none of its cleaners receives it.
    IdentifierNotReceived { store: String, identifier: String },
    /// None of the store's cleaners is routed requests of this jurisdiction.
    JurisdictionNotRouted { store: String, jurisdiction: String },
    /// None of the store's cleaners is routed requests from this source (`null`: requests
    /// submitted without a source).
    SourceNotRouted {
        store: String,
        source: Option<String>,
    },
}

impl Gap {
    /// The `kind` of its JSON.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::NoCleaner { .. } => "no_cleaner",
            Self::IdentifierNotReceived { .. } => "identifier_not_received",
            Self::JurisdictionNotRouted { .. } => "jurisdiction_not_routed",
            Self::SourceNotRouted { .. } => "source_not_routed",
        }
    }

    /// The store it is about.
    pub fn store(&self) -> &str {
        match self {
            Self::NoCleaner { store }
            | Self::IdentifierNotReceived { store, .. }
            | Self::JurisdictionNotRouted { store, .. }
            | Self::SourceNotRouted { store, .. } => store,
        }
    }

    /// One line naming the store and what is missing, for people (CLI, logs, dashboard).
    pub fn message(&self) -> String {
        match self {
            Self::NoCleaner { store } => format!("store {store}: no cleaner erases it"),
            Self::IdentifierNotReceived { store, identifier } => format!(
                "store {store}: holds {identifier} identifiers, and none of its cleaners \
                 receives them"
            ),
            Self::JurisdictionNotRouted {
                store,
                jurisdiction,
            } => format!("store {store}: none of its cleaners is routed {jurisdiction} requests"),
            Self::SourceNotRouted {
                store,
                source: Some(source),
            } => format!(
                "store {store}: none of its cleaners is routed requests from source {source}"
            ),
            Self::SourceNotRouted {
                store,
                source: None,
            } => format!("store {store}: none of its cleaners is routed requests without a source"),
        }
    }
}

impl Requests {
    /// The data inventory of the configuration and its gaps.
    pub fn coverage(&self) -> CoverageView {
        coverage(&self.config)
    }
}

/// The data inventory of `config` and its gaps.
pub fn coverage(config: &Config) -> CoverageView {
    let sources: BTreeSet<&str> = config
        .cleaners
        .iter()
        .filter_map(|c| c.routing.sources.as_ref())
        .flatten()
        .map(String::as_str)
        .collect();
    let mut gaps = Vec::new();
    for store in &config.stores {
        let cleaners: Vec<&CleanerConfig> = store
            .cleaners
            .iter()
            .filter_map(|name| config.cleaner(name))
            .collect();
        store_gaps(
            store,
            &cleaners,
            config.jurisdictions.keys(),
            &sources,
            &mut gaps,
        );
    }
    CoverageView {
        stores: config.stores.iter().map(view).collect(),
        gaps,
    }
}

/// The gaps of one store erased by `cleaners`.
fn store_gaps<'a>(
    store: &StoreConfig,
    cleaners: &[&CleanerConfig],
    jurisdictions: impl Iterator<Item = &'a Jurisdiction>,
    sources: &BTreeSet<&str>,
    gaps: &mut Vec<Gap>,
) {
    let name = store.name.to_string();
    if cleaners.is_empty() {
        gaps.push(Gap::NoCleaner { store: name });
        return;
    }
    for identifier in &store.identifiers {
        let received = cleaners.iter().any(|c| {
            c.identifiers
                .as_ref()
                .is_none_or(|k| k.contains(identifier))
        });
        if !received {
            gaps.push(Gap::IdentifierNotReceived {
                store: name.clone(),
                identifier: identifier.clone(),
            });
        }
    }
    for jurisdiction in jurisdictions {
        let routed = cleaners.iter().any(|c| {
            c.routing
                .jurisdictions
                .as_ref()
                .is_none_or(|list| list.contains(jurisdiction))
        });
        if !routed {
            gaps.push(Gap::JurisdictionNotRouted {
                store: name.clone(),
                jurisdiction: jurisdiction.to_string(),
            });
        }
    }
    let sources = sources.iter().map(|s| Some(*s)).chain([None]);
    for source in sources {
        let routed = cleaners.iter().any(|c| {
            c.routing
                .sources
                .as_ref()
                .is_none_or(|list| source.is_some_and(|s| list.iter().any(|x| x == s)))
        });
        if !routed {
            gaps.push(Gap::SourceNotRouted {
                store: name.clone(),
                source: source.map(str::to_owned),
            });
        }
    }
}

fn view(store: &StoreConfig) -> StoreView {
    StoreView {
        name: store.name.to_string(),
        owner: store.owner.clone(),
        description: store.description.clone(),
        identifiers: store.identifiers.iter().cloned().collect(),
        cleaners: store.cleaners.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEANERS: &str = r#"
        [[cleaners]]
        name = "db"
        kind = "manual"
        identifiers = ["user_id"]
        match = { jurisdictions = ["gdpr"], sources = ["web"] }
        [[cleaners]]
        name = "mail"
        kind = "manual"
        identifiers = ["email"]
        match = { sources = ["web", "support"] }
        [[cleaners]]
        name = "everything"
        kind = "manual"
    "#;

    fn gaps(stores: &str) -> Vec<Gap> {
        coverage(&Config::parse(&format!("{CLEANERS}{stores}")).unwrap()).gaps
    }

    fn store(name: &str) -> String {
        name.to_owned()
    }

    #[test]
    fn a_covered_inventory_has_no_gap() {
        let found = gaps(
            r#"
            [[stores]]
            name = "orders"
            identifiers = ["user_id", "email"]
            cleaners = ["db", "mail", "everything"]
            [[stores]]
            name = "warehouse"
            identifiers = ["user_id", "phone"]
            cleaners = ["everything"]
            "#,
        );
        assert_eq!(found, []);
    }

    #[test]
    fn a_store_without_a_cleaner_is_one_gap() {
        let found = gaps("[[stores]]\nname = \"spreadsheets\"\nidentifiers = [\"email\"]\n");
        assert_eq!(
            found,
            [Gap::NoCleaner {
                store: store("spreadsheets")
            }]
        );
    }

    #[test]
    fn an_identifier_no_cleaner_of_the_store_receives_is_a_gap() {
        let found = gaps(
            "[[stores]]\nname = \"crm\"\nidentifiers = [\"email\", \"phone\", \"user_id\"]\n\
             cleaners = [\"db\", \"mail\"]\n",
        );
        let identifiers: Vec<&Gap> = found
            .iter()
            .filter(|g| matches!(g, Gap::IdentifierNotReceived { .. }))
            .collect();
        assert_eq!(
            identifiers,
            [&Gap::IdentifierNotReceived {
                store: store("crm"),
                identifier: "phone".to_owned()
            }]
        );
    }

    #[test]
    fn jurisdictions_and_sources_no_cleaner_of_the_store_is_routed_are_gaps() {
        let found = gaps("[[stores]]\nname = \"eu-db\"\ncleaners = [\"db\"]\n");
        assert_eq!(
            found,
            [
                Gap::JurisdictionNotRouted {
                    store: store("eu-db"),
                    jurisdiction: "ccpa".to_owned()
                },
                Gap::SourceNotRouted {
                    store: store("eu-db"),
                    source: Some("support".to_owned())
                },
                Gap::SourceNotRouted {
                    store: store("eu-db"),
                    source: None
                },
            ]
        );
        assert_eq!(
            found[0].message(),
            "store eu-db: none of its cleaners is routed ccpa requests"
        );
        for gap in &found {
            let json = serde_json::to_value(gap).unwrap();
            assert_eq!(json["kind"], gap.kind());
            assert_eq!(json["store"], gap.store());
        }
    }
}
