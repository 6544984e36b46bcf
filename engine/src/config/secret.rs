//! Secrets named by where they are, never written in `lethe.toml`: a setting `<name>_env =
//! "VARIABLE"` (read from the environment) or `<name>_file = "path"` (the file's contents,
//! one trailing newline dropped).

use std::path::{Path, PathBuf};

use super::validate::invalid;
use super::{CleanerKind, Config, ConfigError};

/// Where one secret is: an environment variable or a file (at most one of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl SecretSource {
    pub fn new(env: Option<&str>, file: Option<&Path>) -> Self {
        Self {
            env: env.map(str::to_owned),
            file: file.map(Path::to_path_buf),
        }
    }

    pub fn is_set(&self) -> bool {
        self.env.is_some() || self.file.is_some()
    }

    /// Reads the secret; `key` names the setting without its suffix (`cleaners[2].password`),
    /// and every error names `<key>_env` or `<key>_file` and what is wrong, never the value.
    /// `Ok(None)` when neither is set.
    pub fn read(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match (&self.env, &self.file) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(invalid(
                format!("{key}_env"),
                format!("set either {key}_env or {key}_file, not both"),
            )),
            (Some(name), None) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Some(value)),
                Ok(_) => Err(invalid(format!("{key}_env"), format!("{name} is empty"))),
                Err(std::env::VarError::NotPresent) => Err(invalid(
                    format!("{key}_env"),
                    format!("{name} is not set in the environment"),
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(invalid(
                    format!("{key}_env"),
                    format!("{name} is not valid UTF-8"),
                )),
            },
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        format!("{key}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                if value.is_empty() {
                    return Err(invalid(
                        format!("{key}_file"),
                        format!("{} is empty", path.display()),
                    ));
                }
                Ok(Some(value.to_owned()))
            }
        }
    }
}

/// A secret written inline (`inline`, empty when absent) or named by `source`: at most one of
/// `<key>`, `<key>_env` and `<key>_file`. The value, read; `None` when none is set.
fn resolve(key: &str, inline: &str, source: &SecretSource) -> Result<Option<String>, ConfigError> {
    if !source.is_set() {
        return Ok((!inline.is_empty()).then(|| inline.to_owned()));
    }
    if !inline.is_empty() {
        return Err(invalid(
            key,
            format!("set one of {key}, {key}_env and {key}_file, not two"),
        ));
    }
    source.read(key)
}

impl Config {
    /// Reads every secret named by `<key>_env` or `<key>_file` into its setting, so that the
    /// rest of Lethe sees one value: the HTTP cleaners' `secret`, the notifier's `secret` and
    /// the tokens' `sha256`. (The built-in cleaners read theirs when they are built.) Errors
    /// name the setting, never a value.
    pub(super) fn resolve_secrets(mut self) -> Result<Self, ConfigError> {
        for (i, cleaner) in self.cleaners.iter_mut().enumerate() {
            if let CleanerKind::Http(http) = &mut cleaner.kind {
                let key = format!("cleaners[{i}].secret");
                http.secret =
                    resolve(&key, &http.secret, &http.secret_source())?.unwrap_or_default();
            }
        }
        if let Some(notifier) = &mut self.notifier {
            let source = SecretSource::new(
                notifier.secret_env.as_deref(),
                notifier.secret_file.as_deref(),
            );
            let inline = notifier.secret.take().unwrap_or_default();
            notifier.secret = resolve("notifier.secret", &inline, &source)?;
        }
        for (i, token) in self.tokens.iter_mut().enumerate() {
            let source =
                SecretSource::new(token.sha256_env.as_deref(), token.sha256_file.as_deref());
            let key = format!("tokens[{i}].sha256");
            token.sha256 = resolve(&key, &token.sha256, &source)?.unwrap_or_default();
        }
        if let Some(suppression) = &mut self.suppression {
            suppression.resolve_key()?;
        }
        Ok(self)
    }

    /// The settings whose secret is written in `lethe.toml` itself (`serve` warns about each):
    /// better named by `<key>_env` or `<key>_file`.
    pub fn inline_secrets(&self) -> Vec<String> {
        let mut inline = Vec::new();
        for (i, cleaner) in self.cleaners.iter().enumerate() {
            if let CleanerKind::Http(http) = &cleaner.kind {
                if !http.secret_source().is_set() {
                    inline.push(format!("cleaners[{i}].secret"));
                }
            }
        }
        if let Some(notifier) = &self.notifier {
            let named = notifier.secret_env.is_some() || notifier.secret_file.is_some();
            if notifier.secret.is_some() && !named {
                inline.push("notifier.secret".to_owned());
            }
        }
        for (i, token) in self.tokens.iter().enumerate() {
            if token.sha256_env.is_none() && token.sha256_file.is_none() {
                inline.push(format!("tokens[{i}].sha256"));
            }
        }
        inline
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_secret_is_read_from_a_file_or_the_environment_and_errors_name_the_setting() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "s3cret").unwrap();
        let from_file = SecretSource::new(None, Some(file.path()));
        assert_eq!(
            from_file.read("x.password").unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(SecretSource::default().read("x.password").unwrap(), None);

        let missing = SecretSource::new(Some("LETHE_TEST_SURELY_UNSET_VARIABLE"), None);
        let message = missing.read("x.password").unwrap_err().to_string();
        assert!(message.contains("x.password_env"), "{message}");
        assert!(
            message.contains("LETHE_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{message}"
        );

        let both = SecretSource::new(Some("A"), Some(file.path()));
        assert!(both
            .read("x.password")
            .unwrap_err()
            .to_string()
            .contains("not both"));

        let empty = tempfile::NamedTempFile::new().unwrap();
        let message = SecretSource::new(None, Some(empty.path()))
            .read("x.password")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("x.password_file") && message.contains("is empty"),
            "{message}"
        );
    }

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{text}").unwrap();
        file
    }

    const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn every_secret_setting_is_read_from_a_file_or_the_environment() {
        let secret = file_with("whsec-from-file");
        let hash = file_with(HASH);
        let text = format!(
            "[notifier]\nurl = \"http://n.internal/\"\nsecret_env = \"PATH\"\n\
             [[tokens]]\nname = \"ops\"\nsha256_file = {:?}\nscopes = [\"admin\"]\n\
             [[cleaners]]\nname = \"billing\"\nkind = \"http\"\nurl = \"http://b/\"\n\
             secret_file = {:?}\n",
            hash.path(),
            secret.path()
        );
        let config = Config::parse(&text).unwrap();
        let CleanerKind::Http(http) = &config.cleaners[0].kind else {
            panic!("not http")
        };
        assert_eq!(http.secret, "whsec-from-file");
        assert_eq!(config.tokens[0].sha256, HASH);
        assert_eq!(
            config.notifier.unwrap().secret,
            Some(std::env::var("PATH").unwrap())
        );
    }

    #[test]
    fn inline_secrets_are_listed_and_a_secret_given_twice_or_missing_is_refused_by_name() {
        let inline = format!(
            "[notifier]\nurl = \"http://n.internal/\"\nsecret = \"n\"\n\
             [[tokens]]\nname = \"ops\"\nsha256 = \"{HASH}\"\nscopes = [\"admin\"]\n\
             [[cleaners]]\nname = \"billing\"\nkind = \"http\"\nurl = \"http://b/\"\n\
             secret = \"whsec\"\n"
        );
        assert_eq!(
            Config::parse(&inline).unwrap().inline_secrets(),
            ["cleaners[0].secret", "notifier.secret", "tokens[0].sha256"]
        );

        let twice = format!("{inline}secret_env = \"PATH\"\n");
        let message = Config::parse(&twice).unwrap_err().to_string();
        assert!(message.contains("cleaners[0].secret"), "{message}");
        assert!(message.contains("not two"), "{message}");

        let unset = "[[cleaners]]\nname = \"billing\"\nkind = \"http\"\nurl = \"http://b/\"\n\
                     secret_env = \"LETHE_TEST_SURELY_UNSET_VARIABLE\"\n";
        let message = Config::parse(unset).unwrap_err().to_string();
        assert!(message.contains("cleaners[0].secret_env"), "{message}");

        let bad_hash = file_with("not-a-hash");
        let token = format!(
            "[[tokens]]\nname = \"ops\"\nsha256_file = {:?}\nscopes = [\"admin\"]\n",
            bad_hash.path()
        );
        let message = Config::parse(&token).unwrap_err().to_string();
        assert!(message.contains("tokens[0].sha256"), "{message}");
        assert!(!message.contains("not-a-hash"), "{message}");
    }
}
