//! `lethe serve`: the HTTP API with the workflow, until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::config::DEFAULT_LISTEN;
use crate::root::{self, Serve};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "LETHE_LISTEN")]
    listen: Option<String>,
}

pub(super) async fn run(context: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let listen = args
        .listen
        .or_else(|| context.config.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    root::serve(Serve {
        config: context.config.clone(),
        database_url: context.database_url.clone(),
        listen,
        dev_master_key: context.dev_master_key,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
