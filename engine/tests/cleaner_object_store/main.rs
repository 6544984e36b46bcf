//! The built-in `kind = "object_store"` cleaner against a real S3-compatible server, moto's
//! (`support/moto.rs`; `scripts/services/s3.sh` installs it): each test starts its own server,
//! seeds a bucket, builds the cleaner from a parsed lethe.toml and checks what is left.
//!
//! - `cleaner.rs`: attempts, batches and dry runs; a re-run deletes nothing more; an outage is
//!   a retryable failure, a missing bucket is not; no error names an identifier.
//! - `hostile.rs`: identifiers that would widen the deletion if copied into a key (`420` next
//!   to `42`, `../`, `*`, `/`, empty) delete only the subject's own objects.
//! - `keys_from.rs`: the keys named in the application's rows, in three shapes, and a URL of
//!   another bucket that is never deleted.
//! - `lifecycle.rs` and `batch.rs`: requests through a running engine, from the grace period to
//!   `Completed` with the server killed while they are due; a thousand requests in batches.

#[path = "../support/child.rs"]
mod child;
#[path = "../support/moto.rs"]
mod moto;

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/many.rs"]
mod many;

mod batch;
mod cleaner;
mod hostile;
mod keys_from;
mod lifecycle;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;

use chrono::Utc;
use futures::{StreamExt as _, TryStreamExt as _};
use lethe_domain::state::Request;
use lethe_domain::{Aggregate as _, CleanerName, Command, DeletionRequest, RequestState};
use lethe_engine::cleaners::object_store::ObjectStoreCleaner;
use lethe_engine::cleaners::{Attempt, Outcome};
use lethe_engine::config::{CleanerKind, Config};
use moto::Moto;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::ObjectStore as _;

pub const BUCKET: &str = "user-uploads";

/// A bucket on a moto server, and the credentials files the cleaner reads.
#[derive(Debug)]
pub struct Fixture {
    pub moto: Moto,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A server with an empty [`BUCKET`]; `None` when moto is not installed.
    pub async fn start() -> Option<Self> {
        let moto = Moto::start().await?;
        let dir = tempfile::tempdir().unwrap();
        for (file, value) in [("key_id", "lethe-test"), ("secret", "lethe-test-secret")] {
            let mut f = std::fs::File::create(dir.path().join(file)).unwrap();
            writeln!(f, "{value}").unwrap();
        }
        let fixture = Self { moto, dir };
        fixture.create_bucket(BUCKET).await;
        Some(fixture)
    }

    pub async fn create_bucket(&self, name: &str) {
        let response = reqwest::Client::new()
            .put(format!("{}/{name}", self.moto.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "creating bucket {name}: {response:?}"
        );
    }

    /// A client of `bucket` for seeding and checking.
    pub fn client(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.moto.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("seed")
            .with_secret_access_key("seed")
            .build()
            .unwrap()
    }

    pub async fn put(&self, bucket: &str, keys: &[&str]) {
        let client = &self.client(bucket);
        futures::stream::iter(keys)
            .map(|key| async move {
                let path = Path::parse(key).unwrap_or_else(|e| panic!("{key}: {e}"));
                client.put(&path, "x".into()).await.unwrap();
            })
            .buffer_unordered(16)
            .collect::<()>()
            .await;
    }

    /// Every key of `bucket`.
    pub async fn keys(&self, bucket: &str) -> BTreeSet<String> {
        self.client(bucket)
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap()
    }

    /// lethe.toml with one object_store cleaner named `uploads`: `settings` are its own lines
    /// beyond the bucket, the endpoint and the credentials.
    pub fn config(&self, bucket: &str, settings: &str) -> String {
        format!(
            "[[cleaners]]\nname = \"uploads\"\nkind = \"object_store\"\n{}",
            self.lines(bucket, settings)
        )
    }

    /// The settings of an object_store cleaner on `bucket` of this server, as TOML lines:
    /// the endpoint, the credentials' files, a 30 s time-out, then `settings`.
    pub fn lines(&self, bucket: &str, settings: &str) -> String {
        self.lines_at(&self.moto.endpoint(), bucket, settings)
    }

    /// [`Fixture::lines`] with the server reached at `endpoint` (a proxy in front of it).
    pub fn lines_at(&self, endpoint: &str, bucket: &str, settings: &str) -> String {
        format!(
            "url = \"s3://{bucket}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             access_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n\
             timeout = \"30s\"\n{settings}\n",
            endpoint,
            self.dir.path().join("key_id").display(),
            self.dir.path().join("secret").display(),
        )
    }

    pub fn cleaner(&self, bucket: &str, settings: &str) -> ObjectStoreCleaner {
        cleaner_from(&self.config(bucket, settings))
    }
}

/// The first cleaner of `toml`, built.
pub fn cleaner_from(toml: &str) -> ObjectStoreCleaner {
    let config = Config::parse(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let cleaner = &config.cleaners[0];
    let CleanerKind::ObjectStore(settings) = &cleaner.kind else {
        panic!("not an object_store cleaner");
    };
    ObjectStoreCleaner::new(cleaner, settings).unwrap()
}

/// A received request, for the attempts' `request` (the cleaner reads only the subject).
pub fn request() -> Request {
    let receive = Command::Receive(lethe_domain::command::Receive {
        request_id: lethe_domain::RequestId::from_uuid(uuid::Uuid::now_v7()),
        subject: lethe_domain::Subject::parse(BTreeMap::from([(
            "user_id".to_owned(),
            "fixture".to_owned(),
        )]))
        .unwrap()
        .into(),
        jurisdiction: lethe_domain::Jurisdiction::parse("gdpr").unwrap(),
        source: None,
        reason: None,
        external_id: None,
        tags: vec![],
        received_at: Utc::now(),
        policy: lethe_domain::RequestPolicy {
            grace_period: chrono::TimeDelta::days(1),
            reminders: vec![],
            deadline: lethe_domain::DeadlineRule::GDPR,
            approval_required: false,
        },
    });
    let events = DeletionRequest::handle_command(&RequestState::NotReceived, receive).unwrap();
    let state = events
        .into_iter()
        .fold(RequestState::NotReceived, DeletionRequest::apply_event);
    match state {
        RequestState::Received(request) => *request,
        RequestState::NotReceived => unreachable!(),
    }
}

pub fn subject(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The outcome of one attempt for `subject`.
pub async fn attempt(cleaner: &ObjectStoreCleaner, subject: &BTreeMap<String, String>) -> Outcome {
    use lethe_engine::cleaners::Cleaner as _;
    let request = request();
    let name = CleanerName::parse("uploads").unwrap();
    cleaner
        .attempt(Attempt {
            request: &request,
            cleaner: &name,
            attempt: 1,
            subject: Some(subject),
            due: None,
            public_url: "http://127.0.0.1:1",
            now: Utc::now(),
        })
        .await
        .unwrap()
}

/// The `objects` count of a success; panics on anything else.
pub fn deleted(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Succeeded { deleted, .. } => deleted.as_ref().unwrap()["objects"],
        other => panic!("expected a success, got {other:?}"),
    }
}

pub fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}
