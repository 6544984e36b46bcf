//! The `lethe` command line (README.md, docs/OPERATIONS.md): a thin edge that parses, calls
//! the application service and renders. One file per command group. Exit codes: 0 success,
//! 1 a failure the message names, 2 a usage error (from clap), 141 standard output closed by
//! its reader (as `SIGPIPE` would end a Unix tool).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};
use lethe_domain::RequestId;

use crate::app::Requests;
use crate::config::{Config, DEFAULT_DATABASE_URL};
use crate::root::keys::KeySource;
use crate::root::keys::MasterKey;
use crate::root::Database;
use crate::telemetry;

/// `println!` to standard output that returns the write's error instead of panicking, so a
/// reader that stops early (`lethe submit | head -1`) ends the command quietly ([`run`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` as [`outln!`] is `println!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod admin;
mod audit;
mod cleaners;
mod coverage;
mod keys;
mod migrate;
mod projections;
mod receipt;
mod render;
mod report;
mod requests;
mod serve;
mod suppressions;
mod token;

#[derive(Debug, Parser)]
#[command(
    name = "lethe",
    version,
    about = "Lethe: erasure requests from intake to proof of deletion"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file (default: ./lethe.toml if present).
    #[arg(long, global = true, env = "LETHE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database: postgres://... or sqlite://PATH (default: sqlite://./lethe-data/lethe.db).
    #[arg(long, global = true, env = "LETHE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Without LETHE_MASTER_KEY_FILE on Postgres: use (or create) a development master key in
    /// ./lethe-data/master.key. Never in production. (SQLite needs no flag: its development
    /// key lives next to the database file.)
    #[arg(long, global = true)]
    pub dev_master_key: bool,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the HTTP API (applies pending migrations first).
    Serve(serve::ServeArgs),
    /// Apply pending database migrations.
    Migrate,
    /// Submit an erasure request.
    Submit(requests::SubmitArgs),
    /// Show a request's current state.
    Show(requests::ShowArgs),
    /// The auditor's replay: every event, the state after it, and the hash-chain check.
    History(requests::HistoryArgs),
    /// Recompute hash chains (all, or one request's); exit 1 naming what fails.
    Verify(audit::VerifyArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// The annual report: requests received in a year, per jurisdiction, and what came of
    /// them (received, complied with in whole or in part, denied, days to respond).
    Report(report::ReportArgs),
    /// Export requests with their events and verification results; verify an export alone.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Manage the projections.
    Projections {
        #[command(subcommand)]
        command: projections::ProjectionsCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// The configured cleaners: `test` shows what one would erase, changing nothing.
    Cleaners {
        #[command(subcommand)]
        command: cleaners::CleanersCommand,
    },
    /// Signed completion receipts: `verify` checks one from the file alone.
    Receipt {
        #[command(subcommand)]
        command: receipt::ReceiptCommand,
    },
    /// The data inventory (`[[stores]]`) and its gaps; exit 1 when there is one.
    Coverage(coverage::CoverageArgs),
    /// The master key: its fingerprint, and rotation.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Suppression after erasure (`[suppression]`): check identifiers, lift a suppression.
    Suppressions {
        #[command(subcommand)]
        command: suppressions::SuppressionsCommand,
    },
}

/// What every command is given: the configuration and where the database is.
struct Context {
    config: Arc<Config>,
    database_url: String,
    dev_master_key: bool,
}

impl Context {
    /// The database, migrated.
    async fn database(&self) -> anyhow::Result<Database> {
        Ok(Database::open(&self.database_url, true).await?)
    }

    /// Where the master key comes from; asked before the database is opened, so that a
    /// missing key is named first.
    fn key_source(&self) -> anyhow::Result<KeySource> {
        Ok(KeySource::for_database(
            &self.database_url,
            self.dev_master_key,
        )?)
    }

    /// The application service over `database`, sealing and opening subjects with `key`.
    fn app(&self, database: &Database, key: Option<MasterKey>) -> Requests {
        database.app(self.config.clone(), key)
    }
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        // The reader of standard output went away: say nothing (nobody reads it) and end as a
        // Unix tool killed by SIGPIPE would, with 128 + 13. What was done before stands.
        Err(error) if closed_output(&error) => ExitCode::from(BROKEN_PIPE),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a command whose standard output was closed by its reader.
pub const BROKEN_PIPE: u8 = 128 + 13;

/// Whether `error` is a write to an output whose reader has gone.
fn closed_output(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load_with(
        cli.global.config.as_deref(),
        &crate::config::Environment::current()?,
    )?;
    let default_filter = if matches!(cli.command, Commands::Serve(_)) {
        "info,sqlx=warn"
    } else {
        "warn"
    };
    telemetry::init(config.log.format, default_filter);
    let database_url = cli
        .global
        .database_url
        .or_else(|| config.database_url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let context = Context {
        config: Arc::new(config),
        database_url,
        dev_master_key: cli.global.dev_master_key,
    };
    match cli.command {
        Commands::Serve(args) => serve::run(&context, args).await,
        Commands::Migrate => migrate::run(&context).await,
        Commands::Submit(args) => requests::submit(&context, args).await,
        Commands::Show(args) => requests::show(&context, args).await,
        Commands::History(args) => requests::history(&context, args).await,
        Commands::Verify(args) => audit::verify(&context, args).await,
        Commands::Admin(command) => admin::run(&context, command).await,
        Commands::Report(args) => report::run(&context, args).await,
        Commands::Audit { command } => audit::run(&context, command).await,
        Commands::Projections { command } => projections::run(&context, command).await,
        Commands::Token { command } => token::run(command),
        Commands::Cleaners { command } => cleaners::run(&context, command).await,
        Commands::Coverage(args) => coverage::run(&context, &args),
        Commands::Receipt { command } => receipt::run(&context, command),
        Commands::Keys { command } => keys::run(&context, command).await,
        Commands::Suppressions { command } => suppressions::run(&context, command).await,
    }
}

/// A success when `ok`, else a failure (exit 1) the output has already named.
fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_id(raw: &str) -> anyhow::Result<RequestId> {
    raw.parse::<RequestId>()
        .map_err(|_| anyhow!("{raw:?} is not a request id (a UUID)"))
}

fn cli_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    format!("cli:{user}")
}
