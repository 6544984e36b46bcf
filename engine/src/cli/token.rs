//! `lethe token create`: a new API token, printed once, with its `[[tokens]]` block.

use std::process::ExitCode;

use crate::config::{token_hash, SCOPES};
use anyhow::bail;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token once, with the `[[tokens]]` block to add to lethe.toml.
    Create {
        /// requests:write, requests:read, audit:read, suppression:read, admin or
        /// cleaner:<name>; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
}

pub(super) fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::Create { scopes, name } = command;
    for scope in &scopes {
        let known = SCOPES.contains(&scope.as_str())
            || scope
                .strip_prefix("cleaner:")
                .is_some_and(|n| lethe_domain::CleanerName::parse(n).is_ok());
        if !known {
            bail!(
                "{scope:?} is not a scope; use {}, or cleaner:<name>",
                SCOPES.join(", ")
            );
        }
    }
    let mut bytes = [0_u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let token = format!("lethe_{}", hex::encode(bytes));
    let name = name.unwrap_or_else(|| format!("token-{}", &hex::encode(&bytes[..4])));
    outln!("Token (shown once; store it now):\n\n  {token}\n")?;
    outln!("Add to lethe.toml:\n")?;
    outln!("[[tokens]]")?;
    outln!("name = {name:?}")?;
    outln!("sha256 = \"{}\"", token_hash(&token))?;
    outln!("scopes = {scopes:?}")?;
    Ok(ExitCode::SUCCESS)
}
