//! `lethe coverage`: the declared stores (`[[stores]]`) and the gaps in their erasure, read
//! from the configuration alone (no database). Exit 1 when there is a gap, so that a CI job
//! can refuse a configuration that leaves personal data behind.

use std::process::ExitCode;

use clap::Args;

use super::{exit_code, Context};
use crate::app::coverage::{coverage, CoverageView};

#[derive(Debug, Args)]
pub struct CoverageArgs {
    /// Print JSON (the body of `GET /v1/coverage`) instead of text.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(context: &Context, args: &CoverageArgs) -> anyhow::Result<ExitCode> {
    let view = coverage(&context.config);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&view)?)?;
    } else {
        out!("{}", render(&view))?;
    }
    Ok(exit_code(view.gaps.is_empty()))
}

/// The inventory as text: one line per store, then one per gap.
fn render(view: &CoverageView) -> String {
    if view.stores.is_empty() {
        return "no stores declared ([[stores]] in lethe.toml)\n".to_owned();
    }
    let mut text = format!("{} stores declared\n", view.stores.len());
    for store in &view.stores {
        let cleaners = if store.cleaners.is_empty() {
            "none".to_owned()
        } else {
            store.cleaners.join(", ")
        };
        text.push_str(&format!("  {}  cleaners: {cleaners}", store.name));
        if let Some(owner) = &store.owner {
            text.push_str(&format!("  owner: {owner}"));
        }
        text.push('\n');
    }
    if view.gaps.is_empty() {
        text.push_str("no gaps\n");
    } else {
        text.push_str(&format!("{} gaps\n", view.gaps.len()));
        for gap in &view.gaps {
            text.push_str(&format!("  {}\n", gap.message()));
        }
    }
    text
}
