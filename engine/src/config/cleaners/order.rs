//! `after = ["primary-db"]`: the names must be configured cleaners and must not form a cycle.

use std::collections::{BTreeMap, BTreeSet};

use lethe_domain::CleanerName;

use super::CleanerConfig;
use crate::config::validate::invalid;
use crate::config::ConfigError;

/// Checks every cleaner's `after`: each name is another configured cleaner, and following
/// them never leads back to where it started (the error names the cycle).
pub(super) fn check_after(cleaners: &[CleanerConfig]) -> Result<(), ConfigError> {
    let index: BTreeMap<&CleanerName, usize> = cleaners
        .iter()
        .enumerate()
        .map(|(i, c)| (&c.name, i))
        .collect();
    for (i, cleaner) in cleaners.iter().enumerate() {
        for name in &cleaner.after {
            if name == &cleaner.name {
                return Err(invalid(
                    format!("cleaners[{i}].after"),
                    format!("{name} cannot come after itself"),
                ));
            }
            if !index.contains_key(name) {
                return Err(invalid(
                    format!("cleaners[{i}].after"),
                    format!("{name} is not a configured cleaner"),
                ));
            }
        }
    }
    // Depth-first from every cleaner; a name met again on the current path closes a cycle.
    let mut done = BTreeSet::new();
    for start in cleaners {
        let mut path = Vec::new();
        if let Some(cycle) = find_cycle(&start.name, cleaners, &index, &mut path, &mut done) {
            let names: Vec<String> = cycle.iter().map(ToString::to_string).collect();
            return Err(invalid(
                format!("cleaners[{}].after", index[&start.name]),
                format!("the cleaners {} wait for each other", names.join(" → ")),
            ));
        }
    }
    Ok(())
}

fn find_cycle<'a>(
    name: &'a CleanerName,
    cleaners: &'a [CleanerConfig],
    index: &BTreeMap<&'a CleanerName, usize>,
    path: &mut Vec<&'a CleanerName>,
    done: &mut BTreeSet<&'a CleanerName>,
) -> Option<Vec<&'a CleanerName>> {
    if let Some(at) = path.iter().position(|n| *n == name) {
        let mut cycle = path[at..].to_vec();
        cycle.push(name);
        return Some(cycle);
    }
    if done.contains(name) {
        return None;
    }
    path.push(name);
    for next in &cleaners[index[name]].after {
        if let Some(cycle) = find_cycle(next, cleaners, index, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(name);
    None
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn cleaners(after: &[(&str, &str)]) -> String {
        after
            .iter()
            .map(|(name, after)| {
                format!("[[cleaners]]\nname = \"{name}\"\nkind = \"manual\"\nafter = [{after}]\n")
            })
            .collect()
    }

    #[test]
    fn an_order_without_cycles_is_accepted() {
        let text = cleaners(&[
            ("db", ""),
            ("files", "\"db\""),
            ("search", "\"db\", \"files\""),
        ]);
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.cleaners[2].after.len(), 2);
    }

    #[test]
    fn unknown_names_and_cycles_are_refused_naming_them() {
        let cases = [
            (
                cleaners(&[("db", "\"dbb\"")]),
                "cleaners[0].after: dbb is not a configured cleaner",
            ),
            (cleaners(&[("db", "\"db\"")]), "db cannot come after itself"),
            (
                cleaners(&[("a", "\"b\""), ("b", "\"c\""), ("c", "\"a\"")]),
                "the cleaners a → b → c → a wait for each other",
            ),
            (
                cleaners(&[("x", ""), ("a", "\"x\", \"b\""), ("b", "\"a\"")]),
                "the cleaners a → b → a wait for each other",
            ),
        ];
        for (text, wanted) in cases {
            let message = Config::parse(&text).unwrap_err().to_string();
            assert!(message.contains(wanted), "{text:?} gave {message:?}");
        }
    }
}
