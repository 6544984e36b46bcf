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

use crate::secrets::MasterKey;

const NONCE_LEN: usize = 12;
const SEALED_PREFIX: &str = "v1:";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed data is malformed")]
    Malformed,
    #[error("sealed data does not open with this key (wrong key, wrong request, or altered)")]
    Undecryptable,
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

impl MasterKey {
    /// The data key of request `id`, wrapped for storage.
    pub fn wrap(&self, id: RequestId, key: &DataKey) -> String {
        seal(
            &self.derive(b"lethe data-key wrapping"),
            &wrap_aad(id),
            &key.0,
        )
    }

    pub fn unwrap(&self, id: RequestId, wrapped: &str) -> Result<DataKey, SealError> {
        let bytes = open(
            &self.derive(b"lethe data-key wrapping"),
            &wrap_aad(id),
            wrapped,
        )?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::Malformed)?;
        Ok(DataKey(bytes))
    }

    /// The keyed blind index of one identifier: equal identifiers give equal indexes, and the
    /// index reveals nothing without the master key.
    pub fn blind_index(&self, kind: &str, value: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.derive(b"lethe blind index"))
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(value.trim().to_lowercase().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The blind indexes of every identifier of a subject.
    pub fn blind_indexes(&self, subject: &Subject) -> Vec<String> {
        subject
            .identifiers()
            .iter()
            .map(|(kind, value)| self.blind_index(kind, value))
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
        let master = MasterKey::from_bytes([3; 32]);
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
            MasterKey::from_bytes([4; 32]).blind_index("email", "a@x")
        );
        assert_eq!(master.blind_indexes(&subject()).len(), 2);
    }
}
