//! `[suppression]` (opt-in): keep a keyed hash of each identifier of a completed request, so
//! that an importing service can ask whether a person was erased (docs/OPERATIONS.md,
//! "Suppression after erasure").

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::invalid;
use super::{ConfigDuration, ConfigError, SecretSource};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressionConfig {
    /// How long an entry answers after its request completed; none: until lifted.
    pub expire_after: Option<ConfigDuration>,
    /// Where the suppression key is: 64 hex digits (32 bytes), its own key, not the master
    /// key, so that rotating the master key leaves the entries matchable (ADR 33).
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
    /// The key's 32 bytes, read from `key_env` / `key_file` when the configuration loads.
    #[serde(skip)]
    pub key: [u8; 32],
}

impl std::fmt::Debug for SuppressionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuppressionConfig")
            .field("expire_after", &self.expire_after)
            .field("key_env", &self.key_env)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl SuppressionConfig {
    /// Reads the key named by `key_env` / `key_file` (one of them is required).
    pub(super) fn resolve_key(&mut self) -> Result<(), ConfigError> {
        let source = SecretSource::new(self.key_env.as_deref(), self.key_file.as_deref());
        let Some(text) = source.read("suppression.key")? else {
            return Err(invalid(
                "suppression.key_env",
                "set suppression.key_env or suppression.key_file: the suppression key \
                 (64 hex digits) is never written in lethe.toml",
            ));
        };
        let setting = if self.key_env.is_some() {
            "suppression.key_env"
        } else {
            "suppression.key_file"
        };
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| invalid(setting, "the suppression key must be 64 hex digits"))?;
        self.key = bytes;
        Ok(())
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.expire_after.is_some_and(|d| d.0.is_zero()) {
            return Err(invalid(
                "suppression.expire_after",
                "must be longer than zero (leave it out for entries that never expire)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use crate::config::Config;

    fn parse(section: &str) -> Result<Config, String> {
        Config::parse(&format!("[suppression]\n{section}")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_key_is_required_read_from_a_file_and_never_shown() {
        let message = parse("expire_after = \"30d\"\n").unwrap_err();
        assert!(message.contains("suppression.key_env"), "{message}");

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        writeln!(bad, "not-hex-secret").unwrap();
        let message = parse(&format!("key_file = {:?}\n", bad.path())).unwrap_err();
        assert!(
            message.contains("suppression.key_file") && message.contains("64 hex digits"),
            "{message}"
        );
        assert!(!message.contains("not-hex-secret"), "{message}");

        let mut good = tempfile::NamedTempFile::new().unwrap();
        writeln!(good, "{}", "0f".repeat(32)).unwrap();
        let config = parse(&format!("key_file = {:?}\n", good.path())).unwrap();
        let suppression = config.suppression.unwrap();
        assert_eq!(suppression.key, [0x0f; 32]);
        assert!(suppression.expire_after.is_none());
        assert!(
            !format!("{suppression:?}").contains("0f0f"),
            "Debug hides the key"
        );

        let message = parse(&format!(
            "key_file = {:?}\nexpire_after = \"0s\"\n",
            good.path()
        ))
        .unwrap_err();
        assert!(message.contains("suppression.expire_after"), "{message}");
    }
}
