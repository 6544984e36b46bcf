//! The master key and what is derived from it.
//!
//! The key comes from the file named by `LETHE_MASTER_KEY_FILE` (64 hex characters). Without
//! it, a development key is generated once under `./lethe-data/master.key` and a warning is
//! logged on every start: fine for trying Lethe out, not for production.
//!
//! Each request's cancel token is `HMAC-SHA256(master key, "cancel-token:" + request id)`, so
//! it is unguessable without the key, needs no storage, and can be re-derived for the
//! reminder e-mails; it is compared in constant time.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use lethe_domain::RequestId;
use rand::RngCore;
use sha2::Sha256;

pub const MASTER_KEY_ENV: &str = "LETHE_MASTER_KEY_FILE";
pub const DEV_KEY_PATH: &str = "./lethe-data/master.key";

#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the master key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the master key file {path} must hold 64 hex characters (32 bytes)")]
    Malformed { path: PathBuf },
    #[error("cannot write the development master key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl MasterKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key named by `LETHE_MASTER_KEY_FILE`, or the development key (created if missing).
    pub fn load() -> Result<Self, KeyError> {
        match std::env::var_os(MASTER_KEY_ENV) {
            Some(path) => Self::read(Path::new(&path)),
            None => {
                tracing::warn!(
                    key.path = DEV_KEY_PATH,
                    "{MASTER_KEY_ENV} is not set: using a development master key; \
                     set it to a key file of your own in production"
                );
                Self::read_or_create(Path::new(DEV_KEY_PATH))
            }
        }
    }

    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Malformed {
            path: path.to_path_buf(),
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed {
            path: path.to_path_buf(),
        })?;
        Ok(Self(bytes))
    }

    fn read_or_create(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Self::read(path);
        }
        let mut bytes = [0_u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let write = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        write_private(path, &hex::encode(bytes)).map_err(write)?;
        Ok(Self(bytes))
    }

    /// The token that lets the data subject cancel request `id`.
    pub fn cancel_token(&self, id: RequestId) -> String {
        let mut mac = self.mac();
        mac.update(b"cancel-token:");
        mac.update(id.to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks a presented cancel token in constant time.
    pub fn verify_cancel_token(&self, id: RequestId, token: &str) -> bool {
        let Ok(presented) = hex::decode(token) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(b"cancel-token:");
        mac.update(id.to_string().as_bytes());
        mac.verify_slice(&presented).is_ok()
    }

    /// A 256-bit subkey for one purpose (HKDF-SHA256 over the master key), so that no two
    /// uses ever share a key.
    pub(crate) fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let mut okm = [0_u8; 32];
        hkdf::Hkdf::<Sha256>::new(None, &self.0)
            .expand(purpose, &mut okm)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
        okm
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_tokens_are_per_request_and_per_key() {
        let key = MasterKey::from_bytes([7; 32]);
        let a = RequestId::from_uuid(uuid::Uuid::now_v7());
        let b = RequestId::from_uuid(uuid::Uuid::now_v7());
        let token = key.cancel_token(a);
        assert_eq!(token.len(), 64);
        assert!(key.verify_cancel_token(a, &token));
        assert!(!key.verify_cancel_token(b, &token));
        assert!(!MasterKey::from_bytes([8; 32]).verify_cancel_token(a, &token));
        assert!(!key.verify_cancel_token(a, "not hex"));
        assert!(!key.verify_cancel_token(a, &token[..62]));
    }

    #[test]
    fn the_development_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/master.key");
        let first = MasterKey::read_or_create(&path).unwrap();
        let second = MasterKey::read_or_create(&path).unwrap();
        assert_eq!(first.0, second.0);
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            MasterKey::read(&path),
            Err(KeyError::Malformed { .. })
        ));
    }
}
