//! `lethe receipt verify FILE`: checks a signed receipt from the file alone, with no database:
//! against the public keys of `GET /v1/receipt-keys` saved to a file (`--keys`), or else the
//! receipt key of the master key this command is configured with.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::Context;
use crate::app::receipt::{public_keys, verify, ReceiptKeysView};
use crate::root::keys::MasterKey;

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt (the body of `GET /v1/requests/{id}/receipt`); exit 1 if any byte of it
    /// was changed or it was signed by another key.
    Verify {
        /// The receipt file.
        file: PathBuf,
        /// The public keys (the body of `GET /v1/receipt-keys`); default: the receipt key of
        /// the master key (`LETHE_MASTER_KEY_FILE`).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
}

pub(super) fn run(context: &Context, command: ReceiptCommand) -> anyhow::Result<ExitCode> {
    let ReceiptCommand::Verify { file, keys } = command;
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let keys: ReceiptKeysView = match keys {
        Some(path) => {
            let text =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_slice(&text)
                .with_context(|| format!("{} is not the receipt keys' JSON", path.display()))?
        }
        None => public_keys(&MasterKey::load(&context.key_source()?)?),
    };
    match verify(&bytes, &keys) {
        Ok(receipt) => {
            let body = &receipt.receipt;
            outln!(
                "VERIFIED: receipt of request {} signed by key {}: completed {}, deadline {} {}",
                body.request_id,
                receipt.key_id,
                body.completed_at.to_rfc3339(),
                body.deadline,
                if body.deadline_met { "met" } else { "missed" },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            outln!("FAILED: {}: {error}", file.display())?;
            Ok(ExitCode::FAILURE)
        }
    }
}
