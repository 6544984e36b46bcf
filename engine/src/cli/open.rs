//! Opening what a command needs: the database, and the master key when it reads or writes
//! personal data.

use std::sync::Arc;

use crate::app::Requests;
use crate::config::Config;
use crate::root::Database;
use crate::store::key_ring;
use crate::store::master_key::{KeySource, MasterKey, MASTER_KEY_ENV};

/// The master key from `source`, checked against the database's (and recorded in a database
/// that records none yet).
pub(super) async fn master_key(
    database: &Database,
    source: &KeySource,
) -> anyhow::Result<MasterKey> {
    let key = MasterKey::load(source)?;
    key_ring::open(database.keys.as_ref(), &key).await?;
    Ok(key)
}

/// For commands that only read: the master key if there is one and it is the database's;
/// otherwise a warning, and the subject is shown sealed.
pub(super) async fn reading_key(
    database: &Database,
    database_url: &str,
    dev_master_key: bool,
) -> Option<MasterKey> {
    let sealed = "the subject is shown sealed";
    let source = match KeySource::for_database(database_url, dev_master_key) {
        Ok(source) => source,
        Err(_) => {
            eprintln!("warning: no master key ({MASTER_KEY_ENV} is not set): {sealed}");
            return None;
        }
    };
    // A development key that does not exist yet opens nothing: do not create one to read.
    if matches!(&source, KeySource::Development(path) if !path.exists()) {
        eprintln!(
            "warning: no master key ({MASTER_KEY_ENV} is not set, and there is no {}): {sealed}",
            source.path().display()
        );
        return None;
    }
    let key = match MasterKey::load(&source) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("warning: {e}: {sealed}");
            return None;
        }
    };
    match key_ring::check(database.keys.as_ref(), &key).await {
        Ok(()) => Some(key),
        Err(e) => {
            eprintln!("warning: {e}; {sealed}");
            None
        }
    }
}

/// The requests service with everything a CLI command may need: read models and sealing.
pub(super) fn sealed_requests(database: &Database, config: Config, key: &MasterKey) -> Requests {
    Requests::new(database.events.clone(), Arc::new(config))
        .with_read_models(database.read_models.clone())
        .with_sealing(key.clone(), database.keys.clone())
}

/// A database URL without its password, for messages.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://lethe:s3cret@db:5432/lethe"),
            "postgres://lethe:***@db:5432/lethe"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            redact("sqlite://./lethe-data/lethe.db"),
            "sqlite://./lethe-data/lethe.db"
        );
    }
}
