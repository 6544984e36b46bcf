//! The master key and what is derived from it.
//!
//! The key comes from the file named by `LETHE_MASTER_KEY_FILE` (64 hex characters). Without
//! it, an embedded SQLite database uses a development key kept next to its file (created on
//! first use, a warning at every start); a Postgres database refuses to start unless
//! `--dev-master-key` asks for a development key explicitly (ADR 15).
//!
//! Every key has a key check value, `HMAC-SHA256(key, "lethe key check value")`, recorded in
//! the database ([`crate::store::key_ring`]) so that a different key is refused at start instead of
//! sealing new requests under a key nobody else has. Its first 16 hex digits are the key's
//! fingerprint and id: they name the key in messages and in every value sealed under it.
//!
//! A process holds a ring of keys ([`MasterKey`]): its own, plus, during a rotation, the other
//! one, learned from the database. Each request's cancel token is
//! `HMAC-SHA256(key, "cancel-token:" + request id)` under the newest key, so it is
//! unguessable, needs no storage and can be re-derived for the reminders; it is compared in
//! constant time against every key of the ring.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use lethe_domain::RequestId;
use rand::RngCore;
use sha2::Sha256;

use crate::store::StoreError;

pub const MASTER_KEY_ENV: &str = "LETHE_MASTER_KEY_FILE";
/// The development key of a Postgres database (`--dev-master-key`), relative to the working
/// directory; the key check in the database refuses it from another directory.
pub const DEV_KEY_PATH: &str = "./lethe-data/master.key";
/// The development key of a SQLite database: this file next to the database file.
pub const DEV_KEY_FILE: &str = "master.key";

const CHECK_LABEL: &[u8] = b"lethe key check value";
/// Hex digits of the check value that make a key's fingerprint (its id).
const FINGERPRINT_LEN: usize = 16;

/// One 256-bit master key. Its `Debug` shows only the fingerprint.
///
/// What every intake derives from it is derived once, here: HKDF's extract step (its
/// pseudorandom key), the fingerprint, and the two subkeys each submission uses (the blind
/// index's and the data-key wrapping's). Derived per call, they cost more instructions than the
/// rest of a submission's cryptography together.
pub struct KeyMaterial {
    bytes: [u8; 32],
    check: [u8; 32],
    fingerprint: String,
    hkdf: hkdf::Hkdf<Sha256>,
    blind_index_key: [u8; 32],
    data_key_wrapping: [u8; 32],
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({})", self.fingerprint())
    }
}

impl KeyMaterial {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(CHECK_LABEL);
        let check: [u8; 32] = mac.finalize().into_bytes().into();
        let mut fingerprint = hex::encode(check);
        fingerprint.truncate(FINGERPRINT_LEN);
        let hkdf = hkdf::Hkdf::<Sha256>::new(None, &bytes);
        let expand = |purpose: &[u8]| {
            let mut okm = [0_u8; 32];
            hkdf.expand(purpose, &mut okm)
                .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
            okm
        };
        let blind_index_key = expand(super::sealing::BLIND_INDEX);
        let data_key_wrapping = expand(super::sealing::DATA_KEY_WRAPPING);
        Self {
            bytes,
            check,
            fingerprint,
            hkdf,
            blind_index_key,
            data_key_wrapping,
        }
    }

    /// The key check value recorded in the database (hex): it identifies the key and reveals
    /// nothing of it.
    pub fn check_value(&self) -> String {
        hex::encode(self.check)
    }

    /// The short hex that names the key in messages and prefixes what is sealed under it.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Whether a recorded check value is this key's, compared in constant time.
    pub fn matches(&self, check_value: &str) -> bool {
        let Ok(stored) = hex::decode(check_value) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(CHECK_LABEL);
        mac.verify_slice(&stored).is_ok()
    }

    /// The key in a file of 64 hex characters.
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
        Ok(Self::from_bytes(bytes))
    }

    pub(crate) const fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// A 256-bit subkey for one purpose (HKDF-SHA256 over the key), so that no two uses ever
    /// share a key.
    pub(crate) fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        if purpose == super::sealing::BLIND_INDEX {
            return self.blind_index_key;
        }
        if purpose == super::sealing::DATA_KEY_WRAPPING {
            return self.data_key_wrapping;
        }
        let mut okm = [0_u8; 32];
        self.hkdf
            .expand(purpose, &mut okm)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
        okm
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    /// The cancel token of request `id` under this key.
    pub(crate) fn cancel_token(&self, id: RequestId) -> String {
        hex::encode(self.cancel_mac(id).finalize().into_bytes())
    }

    fn cancel_mac(&self, id: RequestId) -> Hmac<Sha256> {
        let mut mac = self.mac();
        mac.update(b"cancel-token:");
        mac.update(id.to_string().as_bytes());
        mac
    }
}

/// One key of a ring, and whether new data is sealed under it (a key being retired by a
/// rotation is only read).
#[derive(Debug, Clone)]
pub struct Held {
    pub key: Arc<KeyMaterial>,
    pub writing: bool,
}

/// The keys this process holds: the one it was configured with and, during a rotation, the
/// other one. Clones share the ring, so a refresh ([`crate::store::key_ring::refresh`]) reaches every
/// part of the process at once.
#[derive(Clone)]
pub struct MasterKey {
    configured: Arc<KeyMaterial>,
    /// Writing keys first, newest first.
    ring: Arc<RwLock<Vec<Held>>>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.configured.fingerprint())
    }
}

/// What goes wrong with the master keys: reading the key file, a key that is not the
/// database's (checked against the key ring at start), a rotation refused, or the key
/// store's database.
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
    #[error(
        "a Postgres database needs an explicit master key: set {MASTER_KEY_ENV} to a file \
         holding 64 hex characters (e.g. `openssl rand -hex 32 > master.key`), or pass \
         --dev-master-key to use a development key in {DEV_KEY_PATH} (never in production)"
    )]
    Required,
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

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `LETHE_MASTER_KEY_FILE`.
    File(PathBuf),
    /// A development key, created when missing.
    Development(PathBuf),
}

impl KeySource {
    /// The key for the database at `database_url`: `LETHE_MASTER_KEY_FILE` when set;
    /// otherwise a development key next to a SQLite file, or (only with `dev_key`) in
    /// `./lethe-data/` for Postgres.
    pub fn for_database(database_url: &str, dev_key: bool) -> Result<Self, KeyError> {
        if let Some(path) = std::env::var_os(MASTER_KEY_ENV) {
            return Ok(Self::File(PathBuf::from(path)));
        }
        if let Some(path) = database_url.strip_prefix("sqlite://") {
            let dir = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or_else(|| Path::new("."));
            return Ok(Self::Development(dir.join(DEV_KEY_FILE)));
        }
        if dev_key {
            Ok(Self::Development(PathBuf::from(DEV_KEY_PATH)))
        } else {
            Err(KeyError::Required)
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::File(path) | Self::Development(path) => path,
        }
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self::from_material(KeyMaterial::from_bytes(bytes))
    }

    fn from_material(key: KeyMaterial) -> Self {
        let key = Arc::new(key);
        Self {
            ring: Arc::new(RwLock::new(vec![Held {
                key: key.clone(),
                writing: true,
            }])),
            configured: key,
        }
    }

    /// The key from `source`; a development key is created when missing, with a warning.
    pub fn load(source: &KeySource) -> Result<Self, KeyError> {
        match source {
            KeySource::File(path) => Self::read(path),
            KeySource::Development(path) => {
                tracing::warn!(
                    key.path = %path.display(),
                    "{MASTER_KEY_ENV} is not set: using a development master key; \
                     set it to a key file of your own in production"
                );
                Self::read_or_create(path)
            }
        }
    }

    pub fn read(path: &Path) -> Result<Self, KeyError> {
        KeyMaterial::read(path).map(Self::from_material)
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        write_private(path, &hex::encode(bytes)).map_err(write)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key this process was configured with.
    pub fn configured(&self) -> &Arc<KeyMaterial> {
        &self.configured
    }

    /// The dashboard's key for its forms' CSRF tokens: a subkey of the configured key (HKDF),
    /// so every instance sharing the master key checks the others' forms, and restarts keep
    /// open pages valid.
    pub fn dashboard_form_key(&self) -> [u8; 32] {
        self.configured.derive(b"lethe dashboard form key v1")
    }

    /// The configured key's fingerprint.
    pub fn fingerprint(&self) -> String {
        self.configured.fingerprint()
    }

    /// Every key of the ring, writing keys first, newest first.
    pub fn held(&self) -> Vec<Held> {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the ring (writing keys first, newest first); never empty: without any key
    /// left it keeps the configured one.
    pub fn set_ring(&self, mut held: Vec<Held>) {
        if held.is_empty() {
            held.push(Held {
                key: self.configured.clone(),
                writing: true,
            });
        }
        *self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = held;
    }

    /// The key new data is sealed under and cancel tokens are made with.
    pub fn newest(&self) -> Arc<KeyMaterial> {
        self.held()
            .into_iter()
            .next()
            .map_or_else(|| self.configured.clone(), |h| h.key)
    }

    /// The key of the ring with this fingerprint.
    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<Arc<KeyMaterial>> {
        self.held()
            .into_iter()
            .map(|h| h.key)
            .find(|k| k.fingerprint() == fingerprint)
    }

    /// The token that lets the data subject cancel request `id`.
    pub fn cancel_token(&self, id: RequestId) -> String {
        self.newest().cancel_token(id)
    }

    /// Checks a presented cancel token in constant time against every key of the ring.
    pub fn verify_cancel_token(&self, id: RequestId, token: &str) -> bool {
        let Ok(presented) = hex::decode(token) else {
            return false;
        };
        self.held()
            .iter()
            .any(|h| h.key.cancel_mac(id).verify_slice(&presented).is_ok())
    }
}

/// What is kept of a cancel token issued under a retired key: a hash (the token is 256 random
/// looking bits, so a plain hash cannot be reversed), keyless so that later rotations need not
/// touch it.
pub fn previous_cancel_token_digest(id: RequestId, token: &str) -> Option<[u8; 32]> {
    use sha2::Digest;
    let bytes = hex::decode(token).ok()?;
    let mut hash = Sha256::new();
    hash.update(b"lethe previous cancel token:");
    hash.update(id.as_uuid().as_bytes());
    hash.update(&bytes);
    Some(hash.finalize().into())
}

/// Whether `token` is the one whose digest was kept, compared in constant time.
pub fn matches_previous_cancel_token(id: RequestId, token: &str, kept: &str) -> bool {
    use sha2::digest::CtOutput;
    let (Some(presented), Ok(kept)) = (previous_cancel_token_digest(id, token), hex::decode(kept))
    else {
        return false;
    };
    let Ok(kept) = <[u8; 32]>::try_from(kept) else {
        return false;
    };
    CtOutput::<Sha256>::new(presented.into()) == CtOutput::<Sha256>::new(kept.into())
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
    fn subkeys_kept_at_hand_are_the_ones_hkdf_derives() {
        let key = KeyMaterial::from_bytes([9; 32]);
        for purpose in [
            crate::store::sealing::BLIND_INDEX,
            crate::store::sealing::DATA_KEY_WRAPPING,
            b"lethe master-key wrapping".as_slice(),
            b"any other purpose".as_slice(),
        ] {
            let mut fresh = [0_u8; 32];
            hkdf::Hkdf::<Sha256>::new(None, &[9; 32])
                .expand(purpose, &mut fresh)
                .unwrap();
            assert_eq!(key.derive(purpose), fresh, "{purpose:?}");
        }
        assert_ne!(
            key.derive(crate::store::sealing::BLIND_INDEX),
            key.derive(crate::store::sealing::DATA_KEY_WRAPPING)
        );
        assert_eq!(key.fingerprint(), key.check_value()[..FINGERPRINT_LEN]);
    }

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
    fn a_ring_issues_tokens_under_its_newest_key_and_accepts_every_key() {
        let old = MasterKey::from_bytes([1; 32]);
        let id = RequestId::from_uuid(uuid::Uuid::now_v7());
        let old_token = old.cancel_token(id);
        let new = Arc::new(KeyMaterial::from_bytes([2; 32]));
        old.set_ring(vec![
            Held {
                key: new.clone(),
                writing: true,
            },
            Held {
                key: old.configured().clone(),
                writing: false,
            },
        ]);
        let new_token = old.cancel_token(id);
        assert_ne!(new_token, old_token);
        assert_eq!(new_token, MasterKey::from_bytes([2; 32]).cancel_token(id));
        assert!(old.verify_cancel_token(id, &old_token));
        assert!(old.verify_cancel_token(id, &new_token));
        assert_eq!(
            old.fingerprint(),
            KeyMaterial::from_bytes([1; 32]).fingerprint()
        );
    }

    #[test]
    fn check_values_identify_a_key_without_revealing_it() {
        let key = KeyMaterial::from_bytes([5; 32]);
        let other = KeyMaterial::from_bytes([6; 32]);
        assert_eq!(key.check_value().len(), 64);
        assert_eq!(key.fingerprint(), key.check_value()[..16]);
        assert!(!key.check_value().contains(&hex::encode([5_u8; 32])));
        assert!(key.matches(&key.check_value()));
        assert!(!key.matches(&other.check_value()));
        assert!(!key.matches(&key.check_value()[..62]));
        assert!(!key.matches("not hex"));
        assert_ne!(key.fingerprint(), other.fingerprint());
    }

    #[test]
    fn previous_cancel_tokens_match_only_their_own_digest() {
        let id = RequestId::from_uuid(uuid::Uuid::now_v7());
        let token = MasterKey::from_bytes([1; 32]).cancel_token(id);
        let kept = hex::encode(previous_cancel_token_digest(id, &token).unwrap());
        assert!(matches_previous_cancel_token(id, &token, &kept));
        let other = RequestId::from_uuid(uuid::Uuid::now_v7());
        assert!(!matches_previous_cancel_token(other, &token, &kept));
        assert!(!matches_previous_cancel_token(id, &token[..62], &kept));
        assert!(!matches_previous_cancel_token(id, &token, "zz"));
    }

    #[test]
    fn the_development_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/master.key");
        let first = MasterKey::read_or_create(&path).unwrap();
        let second = MasterKey::read_or_create(&path).unwrap();
        assert_eq!(first.configured().bytes, second.configured().bytes);
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            MasterKey::read(&path),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn the_development_key_lives_next_to_a_sqlite_file_and_postgres_needs_one() {
        // Only meaningful without the environment variable (tests do not set it).
        if std::env::var_os(MASTER_KEY_ENV).is_some() {
            return;
        }
        assert_eq!(
            KeySource::for_database("sqlite://./lethe-data/lethe.db", false).unwrap(),
            KeySource::Development(PathBuf::from("./lethe-data/master.key"))
        );
        assert_eq!(
            KeySource::for_database("sqlite:///srv/db/x.db", false).unwrap(),
            KeySource::Development(PathBuf::from("/srv/db/master.key"))
        );
        assert_eq!(
            KeySource::for_database("sqlite://x.db", false).unwrap(),
            KeySource::Development(PathBuf::from("./master.key"))
        );
        assert!(matches!(
            KeySource::for_database("postgres://db/lethe", false),
            Err(KeyError::Required)
        ));
        assert_eq!(
            KeySource::for_database("postgres://db/lethe", true).unwrap(),
            KeySource::Development(PathBuf::from(DEV_KEY_PATH))
        );
    }
}
