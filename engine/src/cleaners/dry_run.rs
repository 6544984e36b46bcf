//! What `lethe cleaners test` shows: what a cleaner would erase for a subject, found without
//! changing anything.

use serde::Serialize;

/// What a dry run found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DryRun {
    /// One line per statement, key template, prefix or pattern, in the order of the settings.
    pub items: Vec<DryRunItem>,
    /// What the dry run could not show, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl DryRun {
    pub fn note(note: impl Into<String>) -> Self {
        Self {
            items: Vec::new(),
            note: Some(note.into()),
        }
    }
}

/// One statement, template or pattern of a cleaner's settings, and what it matched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DryRunItem {
    /// The setting as written (a statement, `avatars/{user_id}.png`, `session:{user_id}:*`).
    pub target: String,
    /// How many rows, objects, keys or fields it would erase; none when it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// The object or Redis keys it would delete (at most a few hundred).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Why it would not run (the subject lacks an identifier it needs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}
