//! `lethe keys status` and `lethe keys rotate`: the master key.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::Context;
use crate::app::MasterKey;
use crate::root::keys::{KeyMaterial, Progress, RotateOptions, Rotated, MASTER_KEY_ENV};
use crate::root::Database;

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
    let source = context.key_source()?;
    let database = context.database().await?;
    match command {
        KeysCommand::Status => {
            let status = database.key_status(&source).await?;
            match status.configured {
                Ok(fingerprint) => outln!(
                    "configured key: {fingerprint} ({})",
                    source.path().display()
                )?,
                Err(e) => outln!("configured key: none ({e})")?,
            }
            if status.recorded.is_empty() {
                outln!("the database records no key yet")?;
            }
            for (fingerprint, retiring) in &status.recorded {
                let role = if *retiring {
                    "retiring (a rotation is unfinished)"
                } else {
                    "current"
                };
                outln!("database key:   {fingerprint} {role}")?;
            }
        }
        KeysCommand::Rotate {
            new_key_file,
            settle,
            batch,
        } => {
            let key = database.master_key(&source).await?;
            let options = RotateOptions { settle, batch };
            rotate(&database, &key, &new_key_file, options).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn rotate(
    database: &Database,
    key: &MasterKey,
    new_key_file: &Path,
    options: RotateOptions,
) -> anyhow::Result<()> {
    let new = KeyMaterial::read(new_key_file)?;
    let (old, fingerprint) = (key.fingerprint(), new.fingerprint());
    let settle = options.settle;
    let outcome = database
        .rotate_master_key(key, new, options, |progress| {
            // Progress into a closed pipe is no reason to stop a rotation: the lines are lost,
            // the rotation goes on.
            let _unread = match progress {
                Progress::Recorded { resumed: false } => outln!(
                    "recorded the new key {fingerprint}; waiting {} for running instances to \
                     learn it",
                    humantime::format_duration(settle)
                ),
                Progress::Recorded { resumed: true } => {
                    outln!("resuming the rotation to {fingerprint}")
                }
                Progress::Converted(n) => outln!("re-wrapped {n} data keys"),
            };
            ControlFlow::Continue(())
        })
        .await?;
    if let Rotated::Finished { converted } = outcome {
        outln!(
            "rotated from {old} to {fingerprint}: {converted} data keys re-wrapped and their \
             blind indexes re-keyed; the old key is retired. Set {MASTER_KEY_ENV}={} for every \
             instance.",
            new_key_file.display()
        )?;
    }
    Ok(())
}
