//! What one subject's erasure deletes, found without changing anything: each key template
//! filled and checked for its object, each prefix listed (every page), the keys that
//! `keys_from` reads from the application's rows. The attempt deletes what the plan found;
//! a dry run shows it.

use std::collections::BTreeMap;

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::ObjectStore as _;

use super::encode::fill;
use super::failure::StoreFailure;
use super::keys_from::KeysFrom;
use crate::config::KeyTemplate;

/// How many objects are looked up at once.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// One template of the settings, as written, and where it sits (`prefixes[0]`).
#[derive(Debug, Clone)]
pub struct Setting {
    pub name: String,
    pub written: String,
    pub template: KeyTemplate,
}

/// What one setting found.
#[derive(Debug, Clone, Default)]
pub struct PlanItem {
    /// `keys[0]`, `prefixes[1]`, `keys_from`.
    pub setting: String,
    /// The setting as written (the template or the query).
    pub written: String,
    /// The objects that exist and would be deleted.
    pub objects: Vec<Path>,
    /// Why the setting found nothing, or what it passed over; never an identifier value.
    pub note: Option<String>,
}

/// What a subject's erasure deletes, setting by setting, in the order of the settings.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<PlanItem>,
}

impl Plan {
    /// Every object, with the words that name it in an error (`object 3 of prefixes[0]`).
    pub fn objects(&self) -> impl Iterator<Item = (String, &Path)> {
        self.items.iter().flat_map(|item| {
            item.objects
                .iter()
                .enumerate()
                .map(|(i, path)| (format!("object {} of {}", i + 1, item.setting), path))
        })
    }

    /// The notes of the settings that had one, joined: the outcome's `detail`.
    pub fn notes(&self) -> Option<String> {
        let notes: Vec<String> = self
            .items
            .iter()
            .filter_map(|item| item.note.as_ref().map(|n| format!("{}: {n}", item.setting)))
            .collect();
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}

/// Finds what `subject` (already narrowed to the cleaner's identifiers) has in the bucket.
pub async fn plan(
    store: &AmazonS3,
    keys: &[Setting],
    prefixes: &[Setting],
    keys_from: Option<&KeysFrom>,
    subject: &BTreeMap<String, String>,
) -> Result<Plan, StoreFailure> {
    let mut items = Vec::new();
    for setting in keys {
        let mut item = item_of(setting);
        match fill(&setting.template, subject).map(Path::parse) {
            Err(kind) => item.note = Some(lacks(&kind)),
            Ok(Err(_)) => item.note = Some("the filled key is not a valid object key".to_owned()),
            Ok(Ok(path)) => item.objects = existing(store, &setting.name, vec![path]).await?,
        }
        items.push(item);
    }
    for setting in prefixes {
        let mut item = item_of(setting);
        match fill(&setting.template, subject).map(Path::parse) {
            Err(kind) => item.note = Some(lacks(&kind)),
            Ok(Err(_)) => item.note = Some("the filled prefix is not a valid key".to_owned()),
            Ok(Ok(prefix)) => item.objects = listed(store, &setting.name, &prefix).await?,
        }
        items.push(item);
    }
    if let Some(keys_from) = keys_from {
        let mut item = PlanItem {
            setting: "keys_from".to_owned(),
            written: keys_from.query().to_owned(),
            ..PlanItem::default()
        };
        let found = keys_from.keys(subject).await?;
        item.note = found.note();
        item.objects = existing(store, "keys_from", found.keys).await?;
        items.push(item);
    }
    Ok(Plan { items })
}

fn item_of(setting: &Setting) -> PlanItem {
    PlanItem {
        setting: setting.name.clone(),
        written: setting.written.clone(),
        ..PlanItem::default()
    }
}

fn lacks(kind: &str) -> String {
    format!("skipped: the subject has no {kind}")
}

/// Every object under `prefix` (a folder: the listing covers `prefix/`), page after page.
async fn listed(store: &AmazonS3, setting: &str, prefix: &Path) -> Result<Vec<Path>, StoreFailure> {
    store
        .list(Some(prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| StoreFailure::of(&format!("listing {setting}"), &e))
}

/// Those of `paths` that exist (an object already gone is not deleted again, nor counted).
async fn existing(
    store: &AmazonS3,
    setting: &str,
    paths: Vec<Path>,
) -> Result<Vec<Path>, StoreFailure> {
    let mut paths = paths;
    paths.sort();
    paths.dedup();
    let found: Vec<Option<Path>> = futures::stream::iter(paths.into_iter().enumerate())
        .map(|(i, path)| async move {
            match store.head(&path).await {
                Ok(_) => Ok(Some(path)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(StoreFailure::of(
                    &format!("looking up object {} of {setting}", i + 1),
                    &e,
                )),
            }
        })
        .buffered(LOOKUPS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}
