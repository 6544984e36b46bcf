//! The master keys a database's data is sealed under, recorded by their check values, and
//! the rotation from one key to the next (ADR 15).
//!
//! At start, a process's key must be one the database records (the first key a database
//! sees is recorded); otherwise it is refused, naming both fingerprints. During a rotation
//! the database records two keys, the old one retiring, and each wrapped under the other: a
//! process holding either learns the other ([`refresh`], run periodically by `lethe serve`),
//! reads under both, seals new data under the new one and looks subjects up under both. The
//! rotation itself, which re-keys every request, is an application command
//! (`crate::app::keys`); this module records and learns the keys.

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use crate::store::keys::KeyStore;
use crate::store::master_key::{Held, KeyError, KeyMaterial, MasterKey};
use crate::store::StoreError;
use store::{KeyWrap, RecordedKey};

/// How often `lethe serve` re-reads the key ring: a rotation waits a few of these before it
/// converts anything, so that every running process has learned the new key.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// The check record of a key: its fingerprint and check value (not retiring).
pub fn record_of(key: &KeyMaterial) -> RecordedKey {
    RecordedKey {
        fingerprint: key.fingerprint(),
        check_value: key.check_value(),
        retiring: false,
    }
}

fn fingerprints(keys: &[RecordedKey]) -> String {
    let all: Vec<String> = keys
        .iter()
        .map(|k| {
            if k.retiring {
                format!("{} (retiring)", k.fingerprint)
            } else {
                k.fingerprint.clone()
            }
        })
        .collect();
    all.join(" or ")
}

/// Checks the process's key against the database's at start: a database that records no key
/// yet records this one (after checking it against any data key already stored); a key the
/// database does not record is refused. Then learns the other key of a rotation in progress.
pub async fn open(keys: &dyn KeyStore, master: &MasterKey) -> Result<(), KeyError> {
    let (recorded, _) = keys.recorded_keys().await?;
    if recorded.is_empty() {
        if let Some((id, wrapped)) = keys.some_wrapped_key().await? {
            if master.unwrap(id, &wrapped).is_err() {
                let found = crate::store::sealing::forms(&wrapped)
                    .find_map(|(fingerprint, _)| fingerprint)
                    .unwrap_or("a key with no recorded fingerprint")
                    .to_owned();
                return Err(KeyError::Unrecorded {
                    configured: master.fingerprint(),
                    found,
                });
            }
        }
        keys.record_first_key(&record_of(master.configured()))
            .await?;
    }
    check(keys, master).await
}

/// Like [`open`], but records nothing: for commands that only read.
pub async fn check(keys: &dyn KeyStore, master: &MasterKey) -> Result<(), KeyError> {
    let (recorded, _) = keys.recorded_keys().await?;
    if !recorded.is_empty()
        && !recorded
            .iter()
            .any(|k| master.configured().matches(&k.check_value))
    {
        return Err(KeyError::Mismatch {
            configured: master.fingerprint(),
            recorded: fingerprints(&recorded),
        });
    }
    refresh(keys, master).await?;
    Ok(())
}

/// Re-reads the ring: learns keys wrapped under one the process holds, drops keys no longer
/// recorded, and seals under the recorded keys that are not retiring. Returns whether the
/// ring changed. A database that records no key leaves the ring as it is.
pub async fn refresh(keys: &dyn KeyStore, master: &MasterKey) -> Result<bool, StoreError> {
    let (recorded, wraps) = keys.recorded_keys().await?;
    if recorded.is_empty() {
        return Ok(false);
    }
    let mut known: Vec<Arc<KeyMaterial>> = master.held().into_iter().map(|h| h.key).collect();
    if !known.iter().any(|k| Arc::ptr_eq(k, master.configured())) {
        known.push(master.configured().clone());
    }
    learn(&mut known, &recorded, &wraps);
    // Writing keys first, newest first; then the retiring ones.
    let mut ring = Vec::new();
    for writing in [true, false] {
        for record in recorded.iter().rev().filter(|r| r.retiring != writing) {
            if let Some(key) = known
                .iter()
                .find(|k| k.fingerprint() == record.fingerprint && k.matches(&record.check_value))
            {
                ring.push(Held {
                    key: key.clone(),
                    writing,
                });
            }
        }
    }
    if !ring.iter().any(|h| h.writing) {
        tracing::error!(
            key.fingerprint = %master.fingerprint(),
            recorded = %fingerprints(&recorded),
            "this process holds none of the database's writing master keys; restart it with \
             the current key file"
        );
        if let Some(first) = ring.first_mut() {
            first.writing = true;
        }
    }
    let before: Vec<(String, bool)> = master
        .held()
        .iter()
        .map(|h| (h.key.fingerprint(), h.writing))
        .collect();
    let after: Vec<(String, bool)> = ring
        .iter()
        .map(|h| (h.key.fingerprint(), h.writing))
        .collect();
    if before == after {
        return Ok(false);
    }
    for (fingerprint, writing) in &after {
        if !before.iter().any(|(f, _)| f == fingerprint) {
            tracing::info!(key.fingerprint = %fingerprint, writing, "learned a master key from the database");
        }
    }
    for (fingerprint, _) in &before {
        if !after.iter().any(|(f, _)| f == fingerprint) {
            tracing::info!(key.fingerprint = %fingerprint, "a master key was retired");
        }
    }
    master.set_ring(ring);
    Ok(true)
}

/// Adds to `known` every recorded key wrapped under one of them.
fn learn(known: &mut Vec<Arc<KeyMaterial>>, recorded: &[RecordedKey], wraps: &[KeyWrap]) {
    loop {
        let mut learned = false;
        for w in wraps {
            if known.iter().any(|k| k.fingerprint() == w.fingerprint) {
                continue;
            }
            let Some(by) = known.iter().find(|k| k.fingerprint() == w.wrapped_by) else {
                continue;
            };
            let Ok(key) = by.unwrap_master(&w.fingerprint, &w.wrapped_key) else {
                tracing::warn!(key.fingerprint = %w.fingerprint, "a wrapped master key does not open");
                continue;
            };
            if recorded
                .iter()
                .any(|r| r.fingerprint == w.fingerprint && key.matches(&r.check_value))
            {
                known.push(Arc::new(key));
                learned = true;
            }
        }
        if !learned {
            return;
        }
    }
}

/// Re-reads the ring every `interval` until the task is aborted.
pub fn spawn_refresh(
    keys: Arc<dyn KeyStore>,
    master: MasterKey,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = refresh(keys.as_ref(), &master).await {
                tracing::warn!(error = %error, "cannot re-read the master key ring");
            }
        }
    })
}
