//! `lethe cleaners test NAME --subject user_id=42`: a dry run of one configured cleaner.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;

use super::Context;
use crate::root::dry_run::{dry_run, DryRun};

#[derive(Debug, Subcommand)]
pub enum CleanersCommand {
    /// Show what cleaner NAME would erase for a subject, changing nothing (SQL statements
    /// counted inside a transaction that is rolled back, objects listed, Redis keys matched).
    Test {
        /// The cleaner's name in lethe.toml.
        name: String,
        /// An identifier of the subject, as kind=value (repeat for several).
        #[arg(long = "subject", value_name = "KIND=VALUE", required = true, value_parser = identifier)]
        subject: Vec<(String, String)>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `kind=value`, split at the first `=`.
fn identifier(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((kind, value)) if !kind.is_empty() => Ok((kind.to_owned(), value.to_owned())),
        _ => Err(format!("{raw:?} is not KIND=VALUE (e.g. user_id=42)")),
    }
}

pub(super) async fn run(context: &Context, command: CleanersCommand) -> anyhow::Result<ExitCode> {
    let CleanersCommand::Test {
        name,
        subject,
        json,
    } = command;
    let mut identifiers = BTreeMap::new();
    for (kind, value) in subject {
        if identifiers.insert(kind.clone(), value).is_some() {
            anyhow::bail!("--subject names {kind} twice");
        }
    }
    let found = dry_run(&context.config, &name, identifiers).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&found)?)?;
    } else {
        out!("{}", render(&name, &found))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The dry run as text: one line per statement, template or pattern, then the keys it found.
fn render(name: &str, found: &DryRun) -> String {
    let mut text = format!("dry run of cleaner {name} (nothing was changed)\n");
    for item in &found.items {
        match (&item.skipped, item.matched) {
            (Some(reason), _) => {
                text.push_str(&format!("  skipped  {}  ({reason})\n", item.target))
            }
            (None, Some(count)) => text.push_str(&format!("  {count:>7}  {}\n", item.target)),
            (None, None) => text.push_str(&format!("        -  {}\n", item.target)),
        }
        for key in &item.keys {
            text.push_str(&format!("           {key}\n"));
        }
    }
    if let Some(note) = &found.note {
        text.push_str(&format!("  note: {note}\n"));
    }
    text
}
