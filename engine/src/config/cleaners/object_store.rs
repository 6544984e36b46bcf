//! `kind = "object_store"`: Lethe deletes objects from an S3-compatible store itself (docs/CLEANERS.md).

use std::path::PathBuf;

use serde::Deserialize;

use super::key_template::KeyTemplate;
use crate::config::validate::{check_url, invalid};
use crate::config::ConfigError;
use crate::config::SecretSource;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreCleanerConfig {
    /// The bucket: `s3://user-uploads`.
    pub url: String,
    /// An S3-compatible server instead of AWS (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id_env: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Templates of single objects: `avatars/{user_id}.png`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Templates of folders whose every object goes: `uploads/{user_id}/`.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Keys named in the application's own rows.
    pub keys_from: Option<KeysFromConfig>,
}

/// `keys_from`: a query whose rows name the subject's objects (a key, a URL of the bucket, or a
/// JSON document read with `paths`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFromConfig {
    /// The database: `postgres://…`, `mysql://…` or `sqlite://…`.
    pub url: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A query with named parameters, `:user_id`.
    pub query: String,
    /// JSON paths (RFC 9535) into the columns that hold JSON documents.
    #[serde(default)]
    pub paths: Vec<String>,
}

impl ObjectStoreCleanerConfig {
    pub fn access_key_id(&self) -> SecretSource {
        SecretSource::new(
            self.access_key_id_env.as_deref(),
            self.access_key_id_file.as_deref(),
        )
    }

    pub fn secret_access_key(&self) -> SecretSource {
        SecretSource::new(
            self.secret_access_key_env.as_deref(),
            self.secret_access_key_file.as_deref(),
        )
    }

    /// The bucket's name, from `url` (`s3://bucket`).
    pub fn bucket(&self) -> Option<&str> {
        let bucket = self.url.strip_prefix("s3://")?;
        let bucket = bucket.strip_suffix('/').unwrap_or(bucket);
        let valid = !bucket.is_empty()
            && bucket.len() <= 255
            && bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        valid.then_some(bucket)
    }

    /// The parsed `keys` templates.
    pub fn key_templates(&self) -> Vec<KeyTemplate> {
        parse_all(&self.keys)
    }

    /// The parsed `prefixes` templates.
    pub fn prefix_templates(&self) -> Vec<KeyTemplate> {
        parse_all(&self.prefixes)
    }

    /// Checks the settings; `key` names a field of this cleaner (`cleaners[2].url`).
    pub(super) fn check(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.bucket().is_none() {
            return Err(invalid(
                key("url"),
                "must name the bucket as s3://<bucket> (letters, digits, `-`, `.`, `_`)",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            check_url(&key("endpoint"), endpoint)?;
        }
        if self.region.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(
                key("region"),
                "is empty (leave it out for the default)",
            ));
        }
        if self.access_key_id().is_set() != self.secret_access_key().is_set() {
            return Err(invalid(
                key("access_key_id_env"),
                "set access_key_id_env/_file and secret_access_key_env/_file together, or \
                 neither (then the AWS_* environment is used)",
            ));
        }
        for (i, text) in self.keys.iter().enumerate() {
            KeyTemplate::parse(text)
                .and_then(|t| t.check_key(text))
                .map_err(|e| invalid(key(&format!("keys[{i}]")), e))?;
        }
        for (i, text) in self.prefixes.iter().enumerate() {
            KeyTemplate::parse(text)
                .and_then(|t| t.check_prefix())
                .map_err(|e| invalid(key(&format!("prefixes[{i}]")), e))?;
        }
        if let Some(keys_from) = &self.keys_from {
            keys_from.check(&|field| key(&format!("keys_from.{field}")))?;
        }
        if self.keys.is_empty() && self.prefixes.is_empty() && self.keys_from.is_none() {
            return Err(invalid(
                key("keys"),
                "an object_store cleaner needs at least one of keys, prefixes or keys_from",
            ));
        }
        Ok(())
    }
}

impl KeysFromConfig {
    pub fn password(&self) -> SecretSource {
        SecretSource::new(self.password_env.as_deref(), self.password_file.as_deref())
    }

    /// The JSON paths, parsed (checked at start, so they parse).
    pub fn json_paths(&self) -> Vec<serde_json_path::JsonPath> {
        self.paths
            .iter()
            .filter_map(|p| serde_json_path::JsonPath::parse(p).ok())
            .collect()
    }

    fn check(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let scheme = self.url.split(':').next().unwrap_or_default();
        if !matches!(
            scheme,
            "postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite"
        ) {
            return Err(invalid(
                key("url"),
                "must be a postgres://, mysql:// or sqlite:// URL",
            ));
        }
        if self.query.trim().is_empty() {
            return Err(invalid(key("query"), "is empty"));
        }
        for (i, path) in self.paths.iter().enumerate() {
            if let Err(e) = serde_json_path::JsonPath::parse(path) {
                return Err(invalid(
                    key(&format!("paths[{i}]")),
                    format!("is not a JSON path (RFC 9535): {e}"),
                ));
            }
        }
        Ok(())
    }
}

fn parse_all(texts: &[String]) -> Vec<KeyTemplate> {
    texts
        .iter()
        .filter_map(|text| KeyTemplate::parse(text).ok())
        .collect()
}
