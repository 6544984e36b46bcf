//! The master keys a database's data is sealed under, recorded by their check values, and
//! the rotation from one key to the next (ADR 15).
//!
//! At start, a process's key must be one the database records (the first key a database
//! sees is recorded); otherwise it is refused, naming both fingerprints. During a rotation
//! the database records two keys, the old one retiring, and each wrapped under the other: a
//! process holding either learns the other ([`refresh`], run periodically by `lethe serve`),
//! reads under both, seals new data under the new one and looks subjects up under both.
//! [`rotate`] re-wraps every data key and re-keys its blind indexes under the new key in
//! batches (each one transaction; an interrupted rotation resumes where it stopped), keeps
//! the digests of the old cancel tokens of requests still in their grace period, and then
//! deletes the old key's records.

pub mod store;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use lethe_domain::state::Phase;
use lethe_domain::{RequestId, SubjectRecord};

use crate::store::keys::KeyStore;
use crate::store::master_key::{previous_cancel_token_digest, Held, KeyMaterial, MasterKey};
use crate::store::{Database, StoreError};
use store::{KeyWrap, RecordedKey, Rekeyed};

/// How often `lethe serve` re-reads the key ring: a rotation waits a few of these before it
/// converts anything, so that every running process has learned the new key.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error(
        "the master key (fingerprint {configured}) is not this database's: its data is sealed \
         under the key with fingerprint {recorded}; set LETHE_MASTER_KEY_FILE to that key's \
         file (see \"The master key\" in docs/OPERATIONS.md)"
    )]
    Mismatch {
        configured: String,
        recorded: String,
    },
    #[error(
        "the master key (fingerprint {configured}) does not open the data keys already in this \
         database (sealed under {found} before key check values were recorded); set \
         LETHE_MASTER_KEY_FILE to the key they were sealed under"
    )]
    Unrecorded { configured: String, found: String },
    #[error("key rotation: {0}")]
    Rotation(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn record_of(key: &KeyMaterial) -> RecordedKey {
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
pub async fn open(keys: &dyn KeyStore, master: &MasterKey) -> Result<(), KeyRingError> {
    let (recorded, _) = keys.recorded_keys().await?;
    if recorded.is_empty() {
        if let Some((id, wrapped)) = keys.some_wrapped_key().await? {
            if master.unwrap(id, &wrapped).is_err() {
                let found = crate::store::sealing::forms(&wrapped)
                    .find_map(|(fingerprint, _)| fingerprint)
                    .unwrap_or("a key with no recorded fingerprint")
                    .to_owned();
                return Err(KeyRingError::Unrecorded {
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
pub async fn check(keys: &dyn KeyStore, master: &MasterKey) -> Result<(), KeyRingError> {
    let (recorded, _) = keys.recorded_keys().await?;
    if !recorded.is_empty()
        && !recorded
            .iter()
            .any(|k| master.configured().matches(&k.check_value))
    {
        return Err(KeyRingError::Mismatch {
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

/// How a rotation is run.
#[derive(Debug, Clone, Copy)]
pub struct RotateOptions {
    /// How long to wait, once the new key is recorded, for running processes to learn it.
    pub settle: Duration,
    /// Data keys converted per transaction.
    pub batch: u32,
}

impl Default for RotateOptions {
    fn default() -> Self {
        Self {
            settle: REFRESH_INTERVAL * 3,
            batch: 500,
        }
    }
}

/// Where a rotation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The new key is recorded (or was, by the run this one resumes).
    Recorded { resumed: bool },
    /// Data keys re-wrapped so far by this run.
    Converted(u64),
}

/// How a rotation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotated {
    /// Every data key is under the new key and the old key's records are gone.
    Finished { converted: u64 },
    /// Stopped by the progress callback; running it again resumes.
    Interrupted { converted: u64 },
}

/// Rotates the database from the keys `master` holds to `new`: records `new` (the others
/// retiring), waits `settle`, re-wraps and re-keys every request in batches, then deletes the
/// old keys' records. `progress` is told after each step and may stop the rotation
/// (`Break`); running it again with the same new key resumes.
pub async fn rotate(
    database: &Database,
    master: &MasterKey,
    new: KeyMaterial,
    options: RotateOptions,
    mut progress: impl FnMut(Progress) -> ControlFlow<()>,
) -> Result<Rotated, KeyRingError> {
    let keys = database.keys.as_ref();
    check(keys, master).await?;
    let (recorded, _) = keys.recorded_keys().await?;
    let new_fingerprint = new.fingerprint();
    let resumed = recorded.iter().any(|r| r.fingerprint == new_fingerprint);
    if resumed && recorded.len() == 1 {
        return Err(KeyRingError::Rotation(format!(
            "the new key (fingerprint {new_fingerprint}) is already the database's only key"
        )));
    }
    if resumed {
        if !recorded
            .iter()
            .any(|r| r.fingerprint == new_fingerprint && new.matches(&r.check_value))
        {
            return Err(KeyRingError::Rotation(format!(
                "the new key's fingerprint {new_fingerprint} is recorded with another check value"
            )));
        }
    } else {
        if let Some(unfinished) = recorded.iter().find(|r| !r.retiring) {
            if recorded.iter().any(|r| r.retiring) {
                return Err(KeyRingError::Rotation(format!(
                    "a rotation to the key {} is unfinished; finish it first (run this again \
                     with --new-key-file naming that key)",
                    unfinished.fingerprint
                )));
            }
        }
        let held = master.held();
        let mut wraps = Vec::new();
        for record in &recorded {
            let Some(old) = held
                .iter()
                .map(|h| &h.key)
                .find(|k| k.fingerprint() == record.fingerprint)
            else {
                return Err(KeyRingError::Rotation(format!(
                    "the database records the key {}, which this process does not hold",
                    record.fingerprint
                )));
            };
            wraps.push(KeyWrap {
                fingerprint: new_fingerprint.clone(),
                wrapped_by: old.fingerprint(),
                wrapped_key: old.wrap_master(&new),
            });
            wraps.push(KeyWrap {
                fingerprint: old.fingerprint(),
                wrapped_by: new_fingerprint.clone(),
                wrapped_key: new.wrap_master(old),
            });
        }
        keys.begin_rotation(&record_of(&new), &wraps).await?;
    }
    // This process too reads under both keys from now on, and seals under the new one.
    let new = Arc::new(new);
    let mut held = master.held();
    if !held.iter().any(|h| h.key.fingerprint() == new_fingerprint) {
        held.push(Held {
            key: new.clone(),
            writing: true,
        });
        master.set_ring(held);
    }
    refresh(keys, master).await?;
    if progress(Progress::Recorded { resumed }).is_break() {
        return Ok(Rotated::Interrupted { converted: 0 });
    }
    tokio::time::sleep(options.settle).await;

    let mut converted = 0;
    loop {
        // Passes until one finds nothing left: a process that had not yet learned the new
        // key may have sealed a request under the old one during the previous pass.
        loop {
            let mut in_pass = 0;
            let mut after = None;
            loop {
                let rows = keys.wrapped_keys_after(after, options.batch).await?;
                let Some((last, _)) = rows.last() else { break };
                after = Some(*last);
                let todo: Vec<(RequestId, String)> = rows
                    .into_iter()
                    .filter(|(_, wrapped)| {
                        !crate::store::sealing::only_under(wrapped, &new_fingerprint)
                    })
                    .collect();
                if todo.is_empty() {
                    continue;
                }
                let batch = rekeyed(database, master, &new, todo).await?;
                let applied = keys.rekey(&batch).await?;
                in_pass += applied;
                converted += applied;
                if progress(Progress::Converted(converted)).is_break() {
                    return Ok(Rotated::Interrupted { converted });
                }
            }
            if in_pass == 0 {
                break;
            }
        }
        if keys.finish_rotation(&new_fingerprint).await? {
            break;
        }
    }
    refresh(keys, master).await?;
    Ok(Rotated::Finished { converted })
}

/// The requests' data keys re-wrapped under `new`, their subjects' blind indexes under it,
/// and, for requests still in their grace period, the digests of their cancel tokens under
/// every other key.
async fn rekeyed(
    database: &Database,
    master: &MasterKey,
    new: &KeyMaterial,
    rows: Vec<(RequestId, String)>,
) -> Result<Vec<Rekeyed>, KeyRingError> {
    let ids: Vec<RequestId> = rows.iter().map(|(id, _)| *id).collect();
    let mut streams: std::collections::HashMap<RequestId, Vec<_>> =
        std::collections::HashMap::with_capacity(ids.len());
    for event in database.events.read_streams(&ids).await? {
        streams.entry(event.stream_id).or_default().push(event);
    }
    let others: Vec<Arc<KeyMaterial>> = master
        .held()
        .into_iter()
        .map(|h| h.key)
        .filter(|k| k.fingerprint() != new.fingerprint())
        .collect();
    let mut batch = Vec::with_capacity(rows.len());
    for (id, wrapped) in rows {
        let corrupt = |what: String| KeyRingError::Store(StoreError::Corrupt(what));
        let data_key = master
            .unwrap(id, &wrapped)
            .map_err(|e| corrupt(format!("data key of {id}: {e}")))?;
        let Some(events) = streams.remove(&id) else {
            return Err(corrupt(format!(
                "request {id} has a data key but no events"
            )));
        };
        let request = crate::app::loaded(events)
            .map_err(|e| corrupt(format!("request {id}: {e}")))?
            .request;
        let indexes = match &request.subject {
            SubjectRecord::Sealed(sealed) => {
                let subject = data_key
                    .open(id, sealed)
                    .map_err(|e| corrupt(format!("subject of {id}: {e}")))?;
                subject
                    .identifiers()
                    .iter()
                    .map(|(kind, value)| new.blind_index(kind, value))
                    .collect()
            }
            SubjectRecord::Plain(_) => Vec::new(),
        };
        let cancel_digests = if matches!(request.phase, Phase::Grace) {
            others
                .iter()
                .filter_map(|k| previous_cancel_token_digest(id, &k.cancel_token(id)))
                .map(hex::encode)
                .collect()
        } else {
            Vec::new()
        };
        batch.push(Rekeyed {
            id,
            to: new.wrap(id, &data_key),
            from: wrapped,
            indexes,
            cancel_digests,
        });
    }
    Ok(batch)
}
