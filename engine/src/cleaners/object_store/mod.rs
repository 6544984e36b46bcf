//! `kind = "object_store"`: Lethe deletes the subject's objects itself, by the key templates and prefixes of the cleaner's
//! settings (docs/CLEANERS.md).
//!
//! An attempt first finds what the subject has (`plan`: each key looked up, each prefix
//! listed, the keys `keys_from` reads from the application's rows), then deletes it in bulk
//! (`delete`). A batch finds each request's objects and deletes them all together, answering
//! request by request. Identifier values are encoded before they fill a template (`encode`),
//! and no error or detail names an object key (`failure`): keys hold the identifiers.

mod bucket_url;
mod client;
mod delete;
mod encode;
mod failure;
mod keys_from;
mod plan;
mod rows;

pub use encode::encode_identifier;

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt as _;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::ObjectStore as _;

use self::bucket_url::Bucket;
use self::failure::StoreFailure;
use self::keys_from::KeysFrom;
use self::plan::{Plan, Setting};
use super::dry_run::{DryRun, DryRunItem};
use super::{Attempt, BuildError, Cleaner, CleanerError, Outcome};
use crate::config::{CleanerConfig, KeyTemplate, ObjectStoreCleanerConfig};

/// How many requests of a batch are planned at once.
const PLANS_IN_FLIGHT: usize = 8;
/// The most object keys a dry run lists per setting.
const DRY_RUN_KEYS: usize = 200;

#[derive(Debug)]
pub struct ObjectStoreCleaner {
    store: AmazonS3,
    keys: Vec<Setting>,
    prefixes: Vec<Setting>,
    keys_from: Option<KeysFrom>,
}

impl ObjectStoreCleaner {
    pub fn new(
        cleaner: &CleanerConfig,
        settings: &ObjectStoreCleanerConfig,
    ) -> Result<Self, BuildError> {
        let error = |message: String| BuildError {
            cleaner: cleaner.name.clone(),
            message,
        };
        let store =
            client::build(settings, cleaner.timeout.0, &|field| field.to_owned()).map_err(error)?;
        let keys_from = match &settings.keys_from {
            None => None,
            Some(keys_from) => {
                let password = keys_from
                    .password()
                    .read("keys_from.password")
                    .map_err(|e| error(e.to_string()))?;
                let database = rows::Database::connect_lazy(&keys_from.url, password.as_deref())
                    .map_err(|e| error(format!("keys_from.url {e}")))?;
                let bucket = Bucket {
                    name: settings.bucket().unwrap_or_default().to_owned(),
                    endpoint: settings
                        .endpoint
                        .as_deref()
                        .and_then(|e| reqwest::Url::parse(e).ok()),
                };
                let keys_from =
                    KeysFrom::new(database, &keys_from.query, keys_from.json_paths(), bucket)
                        .map_err(|e| error(format!("keys_from.query: {e}")))?;
                Some(keys_from)
            }
        };
        Ok(Self {
            store,
            keys: settings_of("keys", &settings.keys),
            prefixes: settings_of("prefixes", &settings.prefixes),
            keys_from,
        })
    }

    /// What `subject` has in the bucket.
    async fn plan(&self, subject: &BTreeMap<String, String>) -> Result<Plan, StoreFailure> {
        plan::plan(
            &self.store,
            &self.keys,
            &self.prefixes,
            self.keys_from.as_ref(),
            subject,
        )
        .await
    }

    /// The plan of an attempt's subject; an attempt without one cannot be made.
    async fn plan_of(
        &self,
        subject: Option<BTreeMap<String, String>>,
    ) -> Result<Result<Plan, StoreFailure>, CleanerError> {
        let subject = subject.ok_or_else(|| {
            CleanerError::Unavailable("the subject's identifiers could not be read".to_owned())
        })?;
        Ok(self.plan(&subject).await)
    }

    /// That the bucket is there and the credentials open it: a lookup of a missing object
    /// answers 404 as a missing bucket does, so it is asked once, by a listing, first.
    async fn check_bucket(&self) -> Result<(), StoreFailure> {
        let probe = Path::from("lethe-bucket-check");
        self.store
            .list_with_delimiter(Some(&probe))
            .await
            .map(drop)
            .map_err(|e| StoreFailure::of("opening the bucket", &e))
    }
}

/// Each template with the words that name it (`keys[0]`). The templates were checked at start.
fn settings_of(field: &str, texts: &[String]) -> Vec<Setting> {
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            KeyTemplate::parse(text).ok().map(|template| Setting {
                name: format!("{field}[{i}]"),
                written: text.clone(),
                template,
            })
        })
        .collect()
}

fn failed(attempt: &Attempt<'_>, failure: StoreFailure) -> Outcome {
    Outcome::Failed {
        at: attempt.now,
        error: failure.message,
        status_code: failure.status,
        retryable: failure.retryable,
        retry_after: None,
    }
}

#[async_trait]
impl Cleaner for ObjectStoreCleaner {
    fn kind(&self) -> &'static str {
        "object_store"
    }

    fn needs_subject(&self) -> bool {
        true
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<Outcome, CleanerError> {
        let mut outcomes = self.attempt_batch(&[attempt]).await;
        outcomes
            .pop()
            .unwrap_or_else(|| Ok(attempt.failed("no outcome")))
    }

    async fn attempt_batch(&self, attempts: &[Attempt<'_>]) -> Vec<Result<Outcome, CleanerError>> {
        if let Err(failure) = self.check_bucket().await {
            return attempts
                .iter()
                .map(|a| Ok(failed(a, failure.clone())))
                .collect();
        }
        let subjects: Vec<Option<BTreeMap<String, String>>> =
            attempts.iter().map(|a| a.subject.cloned()).collect();
        let plans: Vec<Result<Result<Plan, StoreFailure>, CleanerError>> =
            futures::stream::iter(subjects)
                .map(|subject| self.plan_of(subject))
                .buffered(PLANS_IN_FLIGHT)
                .collect()
                .await;
        // Every object of every request that could be planned, deleted together.
        let mut owners = Vec::new();
        let mut paths = Vec::new();
        for (owner, plan) in plans.iter().enumerate() {
            if let Ok(Ok(plan)) = plan {
                for (label, path) in plan.objects() {
                    owners.push((owner, label));
                    paths.push(path.clone());
                }
            }
        }
        let results = delete::delete_all(&self.store, paths).await;
        let mut deleted = vec![0_u64; attempts.len()];
        let mut first_failure: Vec<Option<StoreFailure>> = vec![None; attempts.len()];
        for ((owner, label), result) in owners.into_iter().zip(results) {
            match result {
                Ok(()) => deleted[owner] += 1,
                Err(error) => {
                    first_failure[owner].get_or_insert_with(|| {
                        StoreFailure::of(&format!("deleting {label}"), &error)
                    });
                }
            }
        }
        plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| {
                let attempt = &attempts[i];
                Ok(match plan? {
                    Err(failure) => failed(attempt, failure),
                    Ok(plan) => match first_failure[i].take() {
                        Some(mut failure) => {
                            failure.message = format!(
                                "{} ({} other object(s) deleted)",
                                failure.message, deleted[i]
                            );
                            failed(attempt, failure)
                        }
                        None => Outcome::Succeeded {
                            at: attempt.now,
                            deleted: Some(BTreeMap::from([("objects".to_owned(), deleted[i])])),
                            detail: plan.notes(),
                        },
                    },
                })
            })
            .collect()
    }

    async fn dry_run(&self, subject: &BTreeMap<String, String>) -> Result<DryRun, CleanerError> {
        let unavailable = |f: StoreFailure| CleanerError::Unavailable(f.message);
        self.check_bucket().await.map_err(unavailable)?;
        let plan = self.plan(subject).await.map_err(unavailable)?;
        let items = plan
            .items
            .into_iter()
            .map(|item| {
                let skipped = item.objects.is_empty() && item.note.is_some();
                DryRunItem {
                    target: item.written,
                    matched: (!skipped).then_some(item.objects.len() as u64),
                    keys: item
                        .objects
                        .iter()
                        .take(DRY_RUN_KEYS)
                        .map(|p| p.to_string())
                        .collect(),
                    skipped: item.note,
                }
            })
            .collect();
        Ok(DryRun { items, note: None })
    }
}
