//! The `lethe` binary: a thin shell over [`lethe_engine::cli`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    lethe_engine::cli::run(lethe_engine::cli::Cli::parse()).await
}
