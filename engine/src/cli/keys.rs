//! `lethe keys status` and `lethe keys rotate`: the master key.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::open::master_key;
use super::Context;
use crate::app::keys;
use crate::root::Database;
use crate::store::master_key::{KeyMaterial, KeySource, MasterKey, MASTER_KEY_ENV};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The fingerprints of the configured key and of the keys the database records.
    Status,
    /// Re-wrap every data key and re-key the blind indexes under a new master key, while
    /// Lethe keeps serving. Resumes where it stopped if interrupted.
    Rotate {
        /// The new key: a file of 64 hex characters (e.g. `openssl rand -hex 32`).
        #[arg(long)]
        new_key_file: PathBuf,
        /// How long to wait, once the new key is recorded, for running instances to learn it
        /// (they re-read the key ring every 2 s).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "6s")]
        settle: std::time::Duration,
        /// Data keys re-wrapped per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
    },
}

pub(super) async fn run(context: &Context, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let source = KeySource::for_database(&context.database_url, context.dev_master_key)?;
    let database = Database::open(&context.database_url, true).await?;
    match command {
        KeysCommand::Status => status(&database, &source).await?,
        KeysCommand::Rotate {
            new_key_file,
            settle,
            batch,
        } => {
            let key = master_key(&database, &source).await?;
            let options = keys::RotateOptions { settle, batch };
            rotate(&database, &key, &new_key_file, options).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(database: &Database, source: &KeySource) -> anyhow::Result<()> {
    let (recorded, _) = database.keys.recorded_keys().await?;
    match MasterKey::load(source) {
        Ok(key) => println!(
            "configured key: {} ({})",
            key.fingerprint(),
            source.path().display()
        ),
        Err(e) => println!("configured key: none ({e})"),
    }
    if recorded.is_empty() {
        println!("the database records no key yet");
    }
    for key in &recorded {
        let role = if key.retiring {
            "retiring (a rotation is unfinished)"
        } else {
            "current"
        };
        println!("database key:   {} {role}", key.fingerprint);
    }
    Ok(())
}

async fn rotate(
    database: &Database,
    key: &MasterKey,
    new_key_file: &std::path::Path,
    options: keys::RotateOptions,
) -> anyhow::Result<()> {
    let new = KeyMaterial::read(new_key_file)?;
    let (old, fingerprint) = (key.fingerprint(), new.fingerprint());
    let settle = options.settle;
    let outcome = keys::rotate(
        database.events.as_ref(),
        database.keys.as_ref(),
        key,
        new,
        options,
        |progress| {
            match progress {
                keys::Progress::Recorded { resumed: false } => println!(
                "recorded the new key {fingerprint}; waiting {} for running instances to learn it",
                humantime::format_duration(settle)
            ),
                keys::Progress::Recorded { resumed: true } => {
                    println!("resuming the rotation to {fingerprint}");
                }
                keys::Progress::Converted(n) => println!("re-wrapped {n} data keys"),
            }
            ControlFlow::Continue(())
        },
    )
    .await?;
    if let keys::Rotated::Finished { converted } = outcome {
        println!(
            "rotated from {old} to {fingerprint}: {converted} data keys re-wrapped and their \
             blind indexes re-keyed; the old key is retired. Set {MASTER_KEY_ENV}={} for every \
             instance.",
            new_key_file.display()
        );
    }
    Ok(())
}
