//! `keys_from`: the objects named in the application's own rows. A query with named
//! parameters (`:user_id`) returns rows whose cells hold a key, a URL of the bucket, or a JSON
//! document whose strings at `paths` are keys or URLs; the cleaner deletes each key found.
//! A URL of another bucket is never deleted, only counted in the outcome's detail.

use std::collections::BTreeMap;

use object_store::path::Path;
use serde_json_path::JsonPath;

use super::bucket_url::{Bucket, Named};
use super::failure::StoreFailure;
use super::rows::{Cell, Database};
use crate::cleaners::sql::params::{NamedQuery, ParamError};

#[derive(Debug)]
pub struct KeysFrom {
    database: Database,
    /// The query, as written and with the database's placeholders.
    query: NamedQuery,
    paths: Vec<JsonPath>,
    bucket: Bucket,
}

/// The keys the rows named, and what was passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub keys: Vec<Path>,
    /// The subject lacks this identifier: the query did not run.
    pub lacking: Option<String>,
    /// URLs of another bucket or host.
    pub elsewhere: usize,
    /// Values that are not object keys (empty, `..` parts).
    pub unusable: usize,
}

impl Found {
    /// The outcome's words about what was passed over, without any value.
    pub fn note(&self) -> Option<String> {
        if let Some(kind) = &self.lacking {
            return Some(format!("skipped: the subject has no {kind}"));
        }
        let mut notes = Vec::new();
        if self.elsewhere > 0 {
            notes.push(format!(
                "{} URL(s) of another bucket or host skipped",
                self.elsewhere
            ));
        }
        if self.unusable > 0 {
            notes.push(format!(
                "{} value(s) that are not object keys skipped",
                self.unusable
            ));
        }
        (!notes.is_empty()).then(|| notes.join(", "))
    }
}

impl KeysFrom {
    /// The error is the query's, converted as the sql cleaner converts its statements.
    pub fn new(
        database: Database,
        query: &str,
        paths: Vec<JsonPath>,
        bucket: Bucket,
    ) -> Result<Self, ParamError> {
        let query = NamedQuery::parse(query, database.backend())?;
        Ok(Self {
            database,
            query,
            paths,
            bucket,
        })
    }

    pub fn query(&self) -> &str {
        self.query.text()
    }

    /// The keys `subject`'s rows name.
    pub async fn keys(&self, subject: &BTreeMap<String, String>) -> Result<Found, StoreFailure> {
        let lacking = |name: &str| Found {
            lacking: Some(name.to_owned()),
            ..Found::default()
        };
        let values = match self.query.values(subject) {
            Ok(values) => values,
            Err(missing) => return Ok(lacking(&missing.0[0])),
        };
        // An empty value would match rows of no one, or of everyone with an empty column.
        if let Some((name, _)) = self
            .query
            .binds()
            .iter()
            .zip(&values)
            .find(|(_, v)| v.is_empty())
        {
            return Ok(lacking(name));
        }
        let rows = self
            .database
            .rows(self.query.sql(), &values)
            .await
            .map_err(|f| StoreFailure {
                message: f.message,
                status: None,
                retryable: f.retryable,
            })?;
        let mut found = Found::default();
        for cell in rows.into_iter().flatten() {
            for value in self.strings(cell) {
                match self.bucket.read(&value) {
                    Named::Elsewhere => found.elsewhere += 1,
                    Named::Key(key) => match Path::parse(&key) {
                        Ok(path) if !key.is_empty() && !key.ends_with('/') => found.keys.push(path),
                        _ => found.unusable += 1,
                    },
                }
            }
        }
        Ok(found)
    }

    /// The strings a cell names: a JSON document (or text holding one) read at every path, or
    /// the text itself.
    fn strings(&self, cell: Cell) -> Vec<String> {
        let document = match cell {
            Cell::Json(value) => value,
            Cell::Text(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(value @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => value,
                _ => return vec![text],
            },
        };
        if let serde_json::Value::String(text) = document {
            return vec![text];
        }
        self.paths
            .iter()
            .flat_map(|path| path.query(&document).all())
            .filter_map(|value| value.as_str().map(str::to_owned))
            .collect()
    }
}
