//! The Ed25519 keys that sign completion receipts (ADR 32): one per master key, its seed
//! derived from the master key with HKDF for this purpose only, so no other secret is kept and
//! rotating the master key rotates the receipt key. A key is named by its id: the first 16 hex
//! digits of the SHA-256 of its public key, which anyone holding the public key can recompute.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::master_key::{KeyMaterial, MasterKey};

/// The HKDF purpose of the receipt key's seed.
const PURPOSE: &[u8] = b"lethe receipt signing key v1";

/// A receipt signing key (the private half never leaves the process).
pub struct ReceiptKey {
    signing: SigningKey,
}

impl ReceiptKey {
    /// The receipt key of master key `master`.
    pub fn of(master: &KeyMaterial) -> Self {
        Self {
            signing: SigningKey::from_bytes(&master.derive(PURPOSE)),
        }
    }

    pub fn id(&self) -> String {
        key_id(&self.public_key())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptKey({})", self.id())
    }
}

/// The id of the receipt key whose public half is `public_key`.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// Whether `signature` is the strict Ed25519 signature of `message` under `public_key`.
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

impl MasterKey {
    /// The key receipts are signed with now: that of the newest master key.
    pub fn receipt_key(&self) -> ReceiptKey {
        ReceiptKey::of(&self.newest())
    }

    /// The receipt keys of every master key held (during a rotation, the old and the new).
    pub fn receipt_keys(&self) -> Vec<ReceiptKey> {
        self.held().iter().map(|h| ReceiptKey::of(&h.key)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_under_its_key_only() {
        let key = ReceiptKey::of(&KeyMaterial::from_bytes([7; 32]));
        let other = ReceiptKey::of(&KeyMaterial::from_bytes([8; 32]));
        let signature = key.sign(b"receipt");
        assert!(verify(&key.public_key(), b"receipt", &signature));
        assert!(!verify(&key.public_key(), b"receipt!", &signature));
        assert!(!verify(&other.public_key(), b"receipt", &signature));
        assert_ne!(key.id(), other.id());
        assert_eq!(key.id().len(), 16);
        assert_eq!(
            key.id(),
            ReceiptKey::of(&KeyMaterial::from_bytes([7; 32])).id()
        );
    }
}
