//! The suppression key (opt-in `[suppression]`, ADR 33): a completed request's identifiers
//! kept as `FINGERPRINT:HMAC` values, HMAC-SHA256 under a key derived (HKDF) from the
//! configured suppression key, normalised as the blind index is
//! ([`crate::store::sealing::identifier_mac`]). Never the identifier: the value reveals nothing
//! without the key, and it outlives the request's data key.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::sealing::identifier_mac;

/// The suppression key. Its `Debug` hides the bytes.
#[derive(Clone)]
pub struct SuppressionKey {
    hashing: [u8; 32],
    fingerprint: String,
}

impl std::fmt::Debug for SuppressionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SuppressionKey({})", self.fingerprint)
    }
}

impl SuppressionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let derive = |purpose: &[u8]| {
            let mut out = [0_u8; 32];
            hkdf::Hkdf::<Sha256>::new(None, &bytes)
                .expand(purpose, &mut out)
                .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
            out
        };
        let mut check = <Hmac<Sha256> as Mac>::new_from_slice(&derive(b"lethe suppression check"))
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        check.update(b"lethe suppression key check value");
        let fingerprint = hex::encode(&check.finalize().into_bytes()[..8]);
        Self {
            hashing: derive(b"lethe suppression"),
            fingerprint,
        }
    }

    /// The first 16 hex digits of the key's check value: names the key without revealing it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The entry of one identifier.
    pub fn hash(&self, kind: &str, value: &str) -> String {
        format!(
            "{}:{}",
            self.fingerprint,
            hex::encode(identifier_mac(&self.hashing, kind, value))
        )
    }

    /// The entries of a subject's identifiers, with the kind of each, sorted and without
    /// repeats.
    pub fn hashes(&self, identifiers: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut hashes: Vec<(String, String)> = identifiers
            .iter()
            .map(|(kind, value)| (self.hash(kind, value), kind.clone()))
            .collect();
        hashes.sort();
        hashes.dedup();
        hashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_normalised_keyed_and_not_the_blind_index() {
        let key = SuppressionKey::from_bytes([7; 32]);
        assert_eq!(
            key.hash("email", "Ada@Example.com "),
            key.hash("email", "ada@example.com")
        );
        assert_ne!(key.hash("email", "a@x"), key.hash("user_id", "a@x"));
        assert_ne!(
            key.hash("email", "a@x"),
            SuppressionKey::from_bytes([8; 32]).hash("email", "a@x")
        );
        let master = crate::store::master_key::KeyMaterial::from_bytes([7; 32]);
        assert_ne!(
            key.hash("email", "a@x").split(':').nth(1),
            master.blind_index("email", "a@x").split(':').nth(1),
            "the same bytes as master key give other values than the blind index"
        );
        assert!(!key.hash("email", "ada@example.com").contains("ada"));
        assert!(key
            .hash("email", "a@x")
            .starts_with(&format!("{}:", key.fingerprint())));
    }
}
