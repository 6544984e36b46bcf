//! The `lethe` binary: a thin shell over [`lethe_engine::cli`].

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: see `mimalloc` in the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    lethe_engine::cli::run(lethe_engine::cli::Cli::parse()).await
}
