//! The master key a command works with, checked against the keys its database records; and
//! what `lethe keys` shows and does with it.

use std::ops::ControlFlow;

pub use crate::app::keys::{Progress, RotateOptions, Rotated};
pub use crate::store::master_key::{KeyMaterial, KeySource, MasterKey, MASTER_KEY_ENV};

use super::Database;
use crate::store::key_ring;
use crate::store::master_key::KeyError;
use crate::store::StoreError;

/// Why a command that only reads has no master key: the subject is then shown sealed.
#[derive(Debug)]
pub enum NoReadingKey {
    /// No key file is configured (and the database is not one with a development key).
    Unconfigured,
    /// The development key does not exist yet (and reading does not create one).
    NoDevelopmentKey(KeySource),
    /// The key file cannot be read.
    Unreadable(KeyError),
    /// The key is not the database's.
    NotTheDatabases(KeyError),
}

/// The master keys as `lethe keys status` shows them.
#[derive(Debug)]
pub struct KeyStatus {
    /// The configured key's fingerprint, or why there is none.
    pub configured: Result<String, KeyError>,
    /// The keys the database records: fingerprint, and whether it is retiring (a rotation is
    /// unfinished).
    pub recorded: Vec<(String, bool)>,
}

impl Database {
    /// The master key from `source`, checked against the database's (and recorded in a
    /// database that records none yet).
    pub async fn master_key(&self, source: &KeySource) -> Result<MasterKey, KeyError> {
        let key = MasterKey::load(source)?;
        key_ring::open(self.keys.as_ref(), &key).await?;
        Ok(key)
    }

    /// For commands that only read: the master key if there is one and it is the database's.
    /// Nothing is created or recorded.
    pub async fn reading_key(
        &self,
        database_url: &str,
        dev_master_key: bool,
    ) -> Result<MasterKey, NoReadingKey> {
        let source = KeySource::for_database(database_url, dev_master_key)
            .map_err(|_| NoReadingKey::Unconfigured)?;
        // A development key that does not exist yet opens nothing: do not create one to read.
        if matches!(&source, KeySource::Development(path) if !path.exists()) {
            return Err(NoReadingKey::NoDevelopmentKey(source));
        }
        let key = MasterKey::load(&source).map_err(NoReadingKey::Unreadable)?;
        key_ring::check(self.keys.as_ref(), &key)
            .await
            .map_err(NoReadingKey::NotTheDatabases)?;
        Ok(key)
    }

    /// The keys the database records, and the one `source` configures.
    pub async fn key_status(&self, source: &KeySource) -> Result<KeyStatus, StoreError> {
        let (recorded, _) = self.keys.recorded_keys().await?;
        Ok(KeyStatus {
            configured: MasterKey::load(source).map(|key| key.fingerprint()),
            recorded: recorded
                .into_iter()
                .map(|key| (key.fingerprint, key.retiring))
                .collect(),
        })
    }

    /// Rotates from `key` to `new` ([`crate::app::keys::rotate`]), reporting progress.
    pub async fn rotate_master_key(
        &self,
        key: &MasterKey,
        new: KeyMaterial,
        options: RotateOptions,
        progress: impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Rotated, KeyError> {
        crate::app::keys::rotate(
            self.events.as_ref(),
            self.keys.as_ref(),
            key,
            new,
            options,
            progress,
        )
        .await
    }
}
