//! `[[stores]]`: the data inventory. Each declared store says who owns it, what it is, which
//! identifier kinds it holds and which cleaners erase it; `lethe coverage` reads it against the
//! cleaners' settings (docs/OPERATIONS.md).

use std::collections::BTreeSet;

use lethe_domain::{CleanerName, StoreName};
use serde::Deserialize;

use super::{CleanerConfig, ConfigError};
use crate::config::validate::{check_identifier_kinds, invalid};

/// One place that holds personal data.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub name: StoreName,
    /// Who answers for it (a team, a person).
    pub owner: Option<String>,
    pub description: Option<String>,
    /// The identifier kinds of a subject the store holds (`email`, `user_id`).
    #[serde(default)]
    pub identifiers: BTreeSet<String>,
    /// The configured cleaners that erase it.
    #[serde(default)]
    pub cleaners: Vec<CleanerName>,
}

/// Checks every `stores[i]`: names are unique, identifier kinds are well formed and every
/// cleaner named is configured.
pub(super) fn check_stores(
    stores: &[StoreConfig],
    cleaners: &[CleanerConfig],
) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (i, store) in stores.iter().enumerate() {
        let key = |field: &str| format!("stores[{i}].{field}");
        if !names.insert(&store.name) {
            return Err(invalid(
                key("name"),
                format!("{} is declared twice", store.name),
            ));
        }
        check_identifier_kinds(&key("identifiers"), store.identifiers.iter())?;
        let unknown: Vec<String> = store
            .cleaners
            .iter()
            .filter(|name| !cleaners.iter().any(|c| &c.name == *name))
            .map(ToString::to_string)
            .collect();
        if !unknown.is_empty() {
            return Err(invalid(
                key("cleaners"),
                format!("not configured cleaners: {}", unknown.join(", ")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const CLEANERS: &str = "[[cleaners]]\nname = \"db\"\nkind = \"manual\"\n";

    #[test]
    fn stores_parse_as_documented() {
        let config = Config::parse(&format!(
            "{CLEANERS}[[stores]]\nname = \"orders-db\"\nowner = \"payments team\"\n\
             description = \"orders and invoices\"\nidentifiers = [\"email\", \"user_id\"]\n\
             cleaners = [\"db\"]\n[[stores]]\nname = \"spreadsheets\"\n"
        ))
        .unwrap();
        assert_eq!(config.stores.len(), 2);
        assert_eq!(config.stores[0].owner.as_deref(), Some("payments team"));
        assert_eq!(config.stores[0].identifiers.len(), 2);
        assert_eq!(config.stores[0].cleaners[0].as_str(), "db");
        assert!(config.stores[1].cleaners.is_empty());
    }

    #[test]
    fn bad_stores_are_refused_naming_what_is_wrong() {
        let store = |body: &str| format!("{CLEANERS}[[stores]]\nname = \"orders\"\n{body}");
        let cases = [
            (
                store("cleaners = [\"db\", \"crm\", \"search\"]"),
                "stores[0].cleaners: not configured cleaners: crm, search",
            ),
            (
                store("identifiers = [\"E-mail\"]"),
                "stores[0].identifiers: \"E-mail\" is not an identifier kind",
            ),
            (
                format!("{}[[stores]]\nname = \"orders\"\n", store("")),
                "stores[1].name: orders is declared twice",
            ),
            (store("ownr = \"x\""), "unknown field `ownr`"),
            (
                "[[stores]]\nname = \"Orders DB\"\n".to_owned(),
                "store: must start with a lowercase letter",
            ),
        ];
        for (text, wanted) in cases {
            let message = Config::parse(&text).unwrap_err().to_string();
            assert!(message.contains(wanted), "{text:?} gave {message:?}");
        }
    }
}
