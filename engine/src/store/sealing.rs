//! Crypto-shredding: the subject's identifiers never reach the log in clear.
//!
//! Each request gets a random 256-bit data key. The identifiers are sealed with AES-256-GCM
//! under it (the request id is the associated data, so a ciphertext cannot be moved to another
//! request), and the data key is stored wrapped (AES-256-GCM again) under a key derived from
//! the master key. Shredding destroys the wrapped data key: the history keeps its ciphertext and
//! still verifies, but nobody can read the identity any more. Duplicate detection uses a keyed
//! blind index (HMAC-SHA256 under another derived key) of each identifier, deleted at
//! shredding too. All primitives come from the RustCrypto crates.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use lethe_domain::{RequestId, SealedSubject, Subject};
use rand::RngCore;
use sha2::Sha256;

use crate::store::master_key::{KeyMaterial, MasterKey};

const NONCE_LEN: usize = 12;
const SEALED_PREFIX: &str = "v1:";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed data is malformed")]
    Malformed,
    #[error("sealed data does not open with this key (wrong key, wrong request, or altered)")]
    Undecryptable,
    #[error("sealed under the master key {0}, which this process does not hold")]
    UnknownKey(String),
}

/// A request's data key. Its `Debug` hides the bytes.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> String {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_else(|_| unreachable!("AES-GCM encryption of a small message cannot fail"));
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&ciphertext);
    format!("{SEALED_PREFIX}{}", hex::encode(bytes))
}

fn open(key: &[u8; 32], aad: &[u8], sealed: &str) -> Result<Vec<u8>, SealError> {
    let bytes = sealed
        .strip_prefix(SEALED_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() > NONCE_LEN)
        .ok_or(SealError::Malformed)?;
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| SealError::Undecryptable)
}

impl DataKey {
    pub fn generate() -> Self {
        let mut bytes = [0_u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Seals the identifiers of request `id`.
    pub fn seal(&self, id: RequestId, subject: &Subject) -> SealedSubject {
        let json = serde_json::to_vec(subject.identifiers())
            .unwrap_or_else(|_| unreachable!("a map of strings always serializes"));
        SealedSubject {
            sealed: seal(&self.0, id.as_uuid().as_bytes(), &json),
        }
    }

    pub fn open(&self, id: RequestId, sealed: &SealedSubject) -> Result<Subject, SealError> {
        let json = open(&self.0, id.as_uuid().as_bytes(), &sealed.sealed)?;
        serde_json::from_slice(&json).map_err(|_| SealError::Malformed)
    }
}

/// HMAC-SHA256 under `key` of one identifier, normalised (trimmed, lower case) so that
/// `Ada@Example.com ` and `ada@example.com` give the same value: the blind index's and the
/// suppression entries' one normalisation.
pub(crate) fn identifier_mac(key: &[u8], kind: &str, value: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(kind.as_bytes());
    mac.update(b"\0");
    mac.update(value.trim().to_lowercase().as_bytes());
    mac.finalize().into_bytes().into()
}

/// The separator of the forms of one wrapped data key (one per master key it is wrapped
/// under, during a rotation two).
const FORM_SEPARATOR: char = '|';
pub(crate) const DATA_KEY_WRAPPING: &[u8] = b"lethe data-key wrapping";
pub(crate) const BLIND_INDEX: &[u8] = b"lethe blind index";
const MASTER_KEY_WRAPPING: &[u8] = b"lethe master-key wrapping";

impl KeyMaterial {
    /// The data key of request `id` wrapped under this key, prefixed with its fingerprint.
    pub fn wrap(&self, id: RequestId, key: &DataKey) -> String {
        format!(
            "{}:{}",
            self.fingerprint(),
            seal(&self.derive(DATA_KEY_WRAPPING), &wrap_aad(id), &key.0)
        )
    }

    /// Opens one form (without its fingerprint prefix).
    fn unwrap_form(&self, id: RequestId, sealed: &str) -> Result<DataKey, SealError> {
        let bytes = open(&self.derive(DATA_KEY_WRAPPING), &wrap_aad(id), sealed)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::Malformed)?;
        Ok(DataKey(bytes))
    }

    /// The keyed blind index of one identifier under this key, prefixed with its
    /// fingerprint: equal identifiers give equal indexes, and the index reveals nothing
    /// without the key.
    pub fn blind_index(&self, kind: &str, value: &str) -> String {
        format!(
            "{}:{}",
            self.fingerprint(),
            hex::encode(identifier_mac(&self.derive(BLIND_INDEX), kind, value))
        )
    }

    /// Another master key wrapped under this one, so that a process holding this one learns
    /// it during a rotation.
    pub fn wrap_master(&self, other: &KeyMaterial) -> String {
        seal(
            &self.derive(MASTER_KEY_WRAPPING),
            other.fingerprint().as_bytes(),
            other.bytes(),
        )
    }

    /// The master key with fingerprint `fingerprint` wrapped under this one; checked against
    /// its fingerprint.
    pub fn unwrap_master(
        &self,
        fingerprint: &str,
        wrapped: &str,
    ) -> Result<KeyMaterial, SealError> {
        let bytes = open(
            &self.derive(MASTER_KEY_WRAPPING),
            fingerprint.as_bytes(),
            wrapped,
        )?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::Malformed)?;
        let key = KeyMaterial::from_bytes(bytes);
        if key.fingerprint() == fingerprint {
            Ok(key)
        } else {
            Err(SealError::Undecryptable)
        }
    }
}

/// The forms of a wrapped data key: (fingerprint of the master key, sealed key). A form
/// written before keys had fingerprints has none.
pub fn forms(wrapped: &str) -> impl Iterator<Item = (Option<&str>, &str)> {
    wrapped.split(FORM_SEPARATOR).map(|form| {
        if form.starts_with(SEALED_PREFIX) {
            (None, form)
        } else {
            match form.split_once(':') {
                Some((fingerprint, sealed)) => (Some(fingerprint), sealed),
                None => (None, form),
            }
        }
    })
}

/// Whether the wrapped data key is in one form only, under the key with `fingerprint`.
pub fn only_under(wrapped: &str, fingerprint: &str) -> bool {
    let mut all = forms(wrapped);
    matches!(all.next(), Some((Some(f), _)) if f == fingerprint) && all.next().is_none()
}

impl MasterKey {
    /// The data key of request `id`, wrapped for storage under every writing key of the ring.
    pub fn wrap(&self, id: RequestId, key: &DataKey) -> String {
        let forms: Vec<String> = self
            .held()
            .iter()
            .filter(|h| h.writing)
            .map(|h| h.key.wrap(id, key))
            .collect();
        forms.join(&FORM_SEPARATOR.to_string())
    }

    /// Opens a wrapped data key with whichever key of the ring it was wrapped under.
    pub fn unwrap(&self, id: RequestId, wrapped: &str) -> Result<DataKey, SealError> {
        let held = self.held();
        let mut unknown = Vec::new();
        let mut failed = None;
        for (fingerprint, sealed) in forms(wrapped) {
            let candidates: Vec<_> = match fingerprint {
                Some(f) => held.iter().filter(|h| h.key.fingerprint() == f).collect(),
                // Before fingerprints: whichever key opens it.
                None => held.iter().collect(),
            };
            if candidates.is_empty() {
                unknown.push(fingerprint.unwrap_or("?").to_owned());
            }
            for h in candidates {
                match h.key.unwrap_form(id, sealed) {
                    Ok(key) => return Ok(key),
                    Err(e) => failed = Some(e),
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Err(SealError::UnknownKey(unknown.join(", "))),
        }
    }

    /// The blind indexes of every identifier of a subject, under every key of the ring (a
    /// lookup during a rotation finds requests indexed under either key).
    pub fn blind_indexes(&self, subject: &Subject) -> Vec<String> {
        let held = self.held();
        subject
            .identifiers()
            .iter()
            .flat_map(|(kind, value)| held.iter().map(|h| h.key.blind_index(kind, value)))
            .collect()
    }
}

fn wrap_aad(id: RequestId) -> Vec<u8> {
    let mut aad = b"data-key:".to_vec();
    aad.extend_from_slice(id.as_uuid().as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::master_key::Held;

    fn subject() -> Subject {
        Subject::parse(BTreeMap::from([
            ("email".to_owned(), "Ada@Example.com".to_owned()),
            ("user_id".to_owned(), "42".to_owned()),
        ]))
        .unwrap()
    }

    fn id(n: u8) -> RequestId {
        RequestId::from_uuid(uuid::Uuid::from_bytes([n; 16]))
    }

    #[test]
    fn a_sealed_subject_opens_only_with_its_key_and_request() {
        let key = DataKey::generate();
        let sealed = key.seal(id(1), &subject());
        assert!(!sealed.sealed.contains("Ada"), "{}", sealed.sealed);
        assert_eq!(key.open(id(1), &sealed).unwrap(), subject());
        assert!(matches!(
            key.open(id(2), &sealed),
            Err(SealError::Undecryptable)
        ));
        assert!(matches!(
            DataKey::generate().open(id(1), &sealed),
            Err(SealError::Undecryptable)
        ));
        let mut altered = sealed.clone();
        altered.sealed.replace_range(
            10..12,
            if &altered.sealed[10..12] == "00" {
                "01"
            } else {
                "00"
            },
        );
        assert!(key.open(id(1), &altered).is_err());
        // Two seals of the same subject differ (random nonces).
        assert_ne!(key.seal(id(1), &subject()), sealed);
    }

    #[test]
    fn data_keys_wrap_under_the_master_key() {
        let master = MasterKey::from_bytes([3; 32]);
        let key = DataKey::generate();
        let wrapped = master.wrap(id(1), &key);
        let unwrapped = master.unwrap(id(1), &wrapped).unwrap();
        assert_eq!(unwrapped.0, key.0);
        assert!(master.unwrap(id(2), &wrapped).is_err());
        assert!(MasterKey::from_bytes([4; 32])
            .unwrap(id(1), &wrapped)
            .is_err());
        assert!(matches!(
            master.unwrap(id(1), "nonsense"),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn blind_indexes_match_equal_identifiers_only_under_one_key() {
        let master = KeyMaterial::from_bytes([3; 32]);
        assert_eq!(
            master.blind_index("email", "Ada@Example.com"),
            master.blind_index("email", " ada@example.com ")
        );
        assert_ne!(
            master.blind_index("email", "a@x"),
            master.blind_index("user_id", "a@x")
        );
        assert_ne!(
            master.blind_index("email", "a@x"),
            KeyMaterial::from_bytes([4; 32]).blind_index("email", "a@x")
        );
        assert!(master
            .blind_index("email", "a@x")
            .starts_with(&format!("{}:", master.fingerprint())));
        assert_eq!(
            MasterKey::from_bytes([3; 32])
                .blind_indexes(&subject())
                .len(),
            2
        );
    }

    fn ring(writing: [u8; 32], reading: [u8; 32]) -> MasterKey {
        let ring = MasterKey::from_bytes(writing);
        ring.set_ring(vec![
            Held {
                key: ring.configured().clone(),
                writing: true,
            },
            Held {
                key: std::sync::Arc::new(KeyMaterial::from_bytes(reading)),
                writing: false,
            },
        ]);
        ring
    }

    #[test]
    fn a_ring_opens_what_any_of_its_keys_wrapped_and_wraps_under_its_writing_keys() {
        let old = MasterKey::from_bytes([1; 32]);
        let new = MasterKey::from_bytes([2; 32]);
        let both = ring([2; 32], [1; 32]);
        let key = DataKey::generate();
        let under_old = old.wrap(id(1), &key);
        assert!(only_under(&under_old, &old.fingerprint()));
        assert_eq!(both.unwrap(id(1), &under_old).unwrap().0, key.0);
        let under_new = both.wrap(id(1), &key);
        assert!(only_under(&under_new, &new.fingerprint()), "{under_new}");
        assert_eq!(new.unwrap(id(1), &under_new).unwrap().0, key.0);
        // A key the process does not hold is named, not mistaken for corruption.
        match old.unwrap(id(1), &under_new) {
            Err(SealError::UnknownKey(named)) => assert_eq!(named, new.fingerprint()),
            other => panic!("{other:?}"),
        }
        // Two forms: either key opens it.
        let two = format!("{under_old}|{under_new}");
        assert!(!only_under(&two, &new.fingerprint()));
        assert_eq!(old.unwrap(id(1), &two).unwrap().0, key.0);
        assert_eq!(new.unwrap(id(1), &two).unwrap().0, key.0);
        // Lookups under a ring cover both keys.
        assert_eq!(both.blind_indexes(&subject()).len(), 4);
    }

    #[test]
    fn a_data_key_wrapped_before_fingerprints_still_opens() {
        let master = MasterKey::from_bytes([3; 32]);
        let key = DataKey::generate();
        let wrapped = master.wrap(id(1), &key);
        let (_, legacy) = wrapped.split_once(':').unwrap();
        assert!(legacy.starts_with("v1:"));
        assert_eq!(master.unwrap(id(1), legacy).unwrap().0, key.0);
        assert!(matches!(
            MasterKey::from_bytes([4; 32]).unwrap(id(1), legacy),
            Err(SealError::Undecryptable)
        ));
    }

    #[test]
    fn a_master_key_wrapped_under_another_opens_only_with_it() {
        let old = KeyMaterial::from_bytes([1; 32]);
        let new = KeyMaterial::from_bytes([2; 32]);
        let wrapped = old.wrap_master(&new);
        let learned = old.unwrap_master(&new.fingerprint(), &wrapped).unwrap();
        assert_eq!(learned.fingerprint(), new.fingerprint());
        assert!(new.unwrap_master(&new.fingerprint(), &wrapped).is_err());
        assert!(old.unwrap_master(&old.fingerprint(), &wrapped).is_err());
    }
}
