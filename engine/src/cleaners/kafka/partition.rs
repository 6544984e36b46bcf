//! `partition_key = "subject"`: a stable key per person, so that one person's messages share a
//! partition across requests, without the identifiers ever being the key.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::master_key::KeyMaterial;

/// What the subkey of the partition keys is derived for: no other use shares it (the blind
/// index of the store has a subkey of its own), so a partition key cannot be matched against
/// the store's blind indexes.
const PURPOSE: &[u8] = b"lethe kafka partition key";

/// HMAC-SHA256 (hex) of the identifiers, under a subkey of `key` (HKDF, as the store's blind
/// index). Values are compared as the blind index compares them (trimmed, lowercase): the same
/// identifiers give the same key in every request; it reveals nothing of them without the key.
pub fn subject_key(key: &KeyMaterial, identifiers: &BTreeMap<String, String>) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.derive(PURPOSE))
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    // Sorted by kind (a BTreeMap); each part after its length, so that no two subjects feed
    // the same bytes.
    for (kind, value) in identifiers {
        let value = value.trim().to_lowercase();
        for part in [kind.as_str(), value.as_str()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_same_subject_gets_the_same_key_and_another_subject_another() {
        let key = KeyMaterial::from_bytes([7; 32]);
        let ada = subject(&[("email", "ada@example.com"), ("user_id", "u1")]);
        let same = subject(&[("user_id", "u1"), ("email", " Ada@Example.com ")]);
        assert_eq!(subject_key(&key, &ada), subject_key(&key, &same));
        let others = [
            subject(&[("email", "bob@example.com"), ("user_id", "u1")]),
            subject(&[("email", "ada@example.com")]),
            subject(&[("email", "ada@example.comuser_id"), ("user_id", "u1")]),
            subject(&[("emai", "lada@example.com"), ("user_id", "u1")]),
        ];
        for other in &others {
            assert_ne!(subject_key(&key, &ada), subject_key(&key, other));
        }
        let other_key = KeyMaterial::from_bytes([8; 32]);
        assert_ne!(subject_key(&key, &ada), subject_key(&other_key, &ada));
        let text = subject_key(&key, &ada);
        assert!(!text.contains("ada") && !text.contains("u1"));
        assert_eq!(text.len(), 64);
    }

    #[test]
    fn it_is_not_the_store_s_blind_index() {
        let key = KeyMaterial::from_bytes([7; 32]);
        let index = key.blind_index("email", "ada@example.com");
        let partition = subject_key(&key, &subject(&[("email", "ada@example.com")]));
        assert!(!index.contains(&partition));
    }
}
