//! `lethe migrate`: apply pending database migrations.

use std::process::ExitCode;

use super::Context;
use crate::root::{redact, Database};

pub(super) async fn run(context: &Context) -> anyhow::Result<ExitCode> {
    Database::open(&context.database_url, true).await?;
    outln!("database {} is up to date", redact(&context.database_url))?;
    Ok(ExitCode::SUCCESS)
}
