//! Secrets named by where they are, never written in `lethe.toml`: a setting `<name>_env =
//! "VARIABLE"` (read from the environment) or `<name>_file = "path"` (the file's contents,
//! one trailing newline dropped).

use std::path::{Path, PathBuf};

use super::validate::invalid;
use super::ConfigError;

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
}
