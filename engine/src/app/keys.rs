//! Rotating the master key (ADR 15), an application command: it records the new key (the
//! others retiring, each wrapped under the other, so that running processes learn it), then
//! re-wraps every data key and re-keys its blind indexes under the new key in batches (each
//! one transaction; an interrupted rotation resumes where it stopped), keeps the digests of
//! the old cancel tokens of requests still in their grace period, and then deletes the old
//! keys' records. It reads each request to re-key it, which is why it lives here and not with
//! the key ring in the store layer.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use lethe_domain::state::Phase;
use lethe_domain::{RequestId, SubjectRecord};

use crate::store::key_ring::store::{KeyWrap, RecordedKey, Rekeyed};
use crate::store::key_ring::{check, record_of, refresh, REFRESH_INTERVAL};
use crate::store::keys::KeyStore;
use crate::store::master_key::{
    previous_cancel_token_digest, Held, KeyError, KeyMaterial, MasterKey,
};
use crate::store::{EventStore, StoreError};

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
    events: &dyn EventStore,
    keys: &dyn KeyStore,
    master: &MasterKey,
    new: KeyMaterial,
    options: RotateOptions,
    mut progress: impl FnMut(Progress) -> ControlFlow<()>,
) -> Result<Rotated, KeyError> {
    check(keys, master).await?;
    let resumed = record_new_key(keys, master, &new).await?;
    let rotation = Rotation {
        events,
        keys,
        master,
        fingerprint: new.fingerprint(),
        new: Arc::new(new),
        batch: options.batch,
    };
    rotation.hold_new_key();
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
            match rotation.pass(&mut converted, &mut progress).await? {
                ControlFlow::Break(()) => return Ok(Rotated::Interrupted { converted }),
                ControlFlow::Continue(0) => break,
                ControlFlow::Continue(_) => {}
            }
        }
        if keys.finish_rotation(&rotation.fingerprint).await? {
            break;
        }
    }
    refresh(keys, master).await?;
    Ok(Rotated::Finished { converted })
}

/// Records `new` as the database's writing key, the recorded ones retiring and each wrapped
/// under the other, unless a run this one resumes did. Returns whether it resumes.
async fn record_new_key(
    keys: &dyn KeyStore,
    master: &MasterKey,
    new: &KeyMaterial,
) -> Result<bool, KeyError> {
    let (recorded, _) = keys.recorded_keys().await?;
    let new_fingerprint = new.fingerprint();
    let resumed = recorded.iter().any(|r| r.fingerprint == new_fingerprint);
    if resumed && recorded.len() == 1 {
        return Err(KeyError::Rotation(format!(
            "the new key (fingerprint {new_fingerprint}) is already the database's only key"
        )));
    }
    if resumed {
        if !recorded
            .iter()
            .any(|r| r.fingerprint == new_fingerprint && new.matches(&r.check_value))
        {
            return Err(KeyError::Rotation(format!(
                "the new key's fingerprint {new_fingerprint} is recorded with another check value"
            )));
        }
        return Ok(true);
    }
    if let Some(unfinished) = recorded.iter().find(|r| !r.retiring) {
        if recorded.iter().any(|r| r.retiring) {
            return Err(KeyError::Rotation(format!(
                "a rotation to the key {} is unfinished; finish it first (run this again \
                 with --new-key-file naming that key)",
                unfinished.fingerprint
            )));
        }
    }
    let wraps = wraps(master, &recorded, new)?;
    keys.begin_rotation(&record_of(new), &wraps).await?;
    Ok(false)
}

/// Each recorded key wrapped under `new`, and `new` under each of them.
fn wraps(
    master: &MasterKey,
    recorded: &[RecordedKey],
    new: &KeyMaterial,
) -> Result<Vec<KeyWrap>, KeyError> {
    let new_fingerprint = new.fingerprint();
    let held = master.held();
    let mut wraps = Vec::new();
    for record in recorded {
        let Some(old) = held
            .iter()
            .map(|h| &h.key)
            .find(|k| k.fingerprint() == record.fingerprint)
        else {
            return Err(KeyError::Rotation(format!(
                "the database records the key {}, which this process does not hold",
                record.fingerprint
            )));
        };
        wraps.push(KeyWrap {
            fingerprint: new_fingerprint.clone(),
            wrapped_by: old.fingerprint(),
            wrapped_key: old.wrap_master(new),
        });
        wraps.push(KeyWrap {
            fingerprint: old.fingerprint(),
            wrapped_by: new_fingerprint.clone(),
            wrapped_key: new.wrap_master(old),
        });
    }
    Ok(wraps)
}

/// A rotation under way, once the new key is recorded.
struct Rotation<'a> {
    events: &'a dyn EventStore,
    keys: &'a dyn KeyStore,
    master: &'a MasterKey,
    new: Arc<KeyMaterial>,
    fingerprint: String,
    batch: u32,
}

impl Rotation<'_> {
    /// This process too reads under both keys from now on, and seals under the new one.
    fn hold_new_key(&self) {
        let mut held = self.master.held();
        if !held.iter().any(|h| h.key.fingerprint() == self.fingerprint) {
            held.push(Held {
                key: self.new.clone(),
                writing: true,
            });
            self.master.set_ring(held);
        }
    }

    /// One pass over every data key, converting those not under the new key alone, a batch
    /// per transaction. Returns how many it converted, or `Break` when `progress` stopped it.
    async fn pass(
        &self,
        converted: &mut u64,
        progress: &mut impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<ControlFlow<(), u64>, KeyError> {
        let mut in_pass = 0;
        let mut after = None;
        loop {
            let rows = self.keys.wrapped_keys_after(after, self.batch).await?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(*last);
            let todo: Vec<(RequestId, String)> = rows
                .into_iter()
                .filter(|(_, wrapped)| {
                    !crate::store::sealing::only_under(wrapped, &self.fingerprint)
                })
                .collect();
            if todo.is_empty() {
                continue;
            }
            let batch = self.rekeyed(todo).await?;
            let applied = self.keys.rekey(&batch).await?;
            in_pass += applied;
            *converted += applied;
            if progress(Progress::Converted(*converted)).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(in_pass))
    }

    /// The requests' data keys re-wrapped under the new key, their subjects' blind indexes
    /// under it, and, for requests still in their grace period, the digests of their cancel
    /// tokens under every other key.
    async fn rekeyed(&self, rows: Vec<(RequestId, String)>) -> Result<Vec<Rekeyed>, KeyError> {
        let ids: Vec<RequestId> = rows.iter().map(|(id, _)| *id).collect();
        let mut streams: HashMap<RequestId, Vec<_>> = HashMap::with_capacity(ids.len());
        for event in self.events.read_streams(&ids).await? {
            streams.entry(event.stream_id).or_default().push(event);
        }
        let new = self.new.as_ref();
        let others: Vec<Arc<KeyMaterial>> = self
            .master
            .held()
            .into_iter()
            .map(|h| h.key)
            .filter(|k| k.fingerprint() != new.fingerprint())
            .collect();
        let mut batch = Vec::with_capacity(rows.len());
        for (id, wrapped) in rows {
            let corrupt = |what: String| KeyError::Store(StoreError::Corrupt(what));
            let data_key = self
                .master
                .unwrap(id, &wrapped)
                .map_err(|e| corrupt(format!("data key of {id}: {e}")))?;
            let Some(events) = streams.remove(&id) else {
                return Err(corrupt(format!(
                    "request {id} has a data key but no events"
                )));
            };
            let request = super::loaded(events)
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
}
