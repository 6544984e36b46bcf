//! The `lethe` command line (README.md, docs/OPERATIONS.md). Each subcommand is a small
//! function over the same pieces the HTTP API uses. Exit codes: 0 success, 1 a failure the
//! message names, 2 a usage error (from clap).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use lethe_domain::RequestId;

use crate::app::views::{HistoryView, RequestView, SubjectView, SubmittedView};
use crate::app::{audit, keys};
use crate::app::{LoadedRequest, Requests, Submission};
use crate::config::{Config, DEFAULT_DATABASE_URL, DEFAULT_LISTEN};
use crate::http::{router, AppState};
use crate::root::{Database, Runtime};
use crate::store::key_ring;
use crate::store::master_key::{KeyMaterial, KeySource, MasterKey, MASTER_KEY_ENV};
use crate::store::EventMetadata;
use crate::telemetry;
use crate::workflow::worker::plan_cleaners;
use lethe_domain::state::Request;
use lethe_domain::Command;

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
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "LETHE_LISTEN")]
        listen: Option<String>,
    },
    /// Apply pending database migrations.
    Migrate,
    /// Submit an erasure request.
    Submit {
        /// An identifier of the subject, e.g. --subject user_id=42 --subject email=a@example.com
        #[arg(long = "subject", value_name = "KIND=VALUE", required = true, value_parser = parse_identifier)]
        subject: Vec<(String, String)>,
        #[arg(long)]
        jurisdiction: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Your own id for the request; submitting it again returns the first request.
        #[arg(long)]
        external_id: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a request's current state.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The auditor's replay: every event, the state after it, and the hash-chain check.
    History {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Recompute hash chains (all, or one request's); exit 1 naming what fails.
    Verify { id: Option<String> },
    /// Cancel a request during its grace period.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a request (before it is due).
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Place a legal hold: the request is not made due (or cleaned) until released.
    Hold {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a legal hold.
    Release {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Extend the legal deadline, within the jurisdiction's maximum.
    Extend {
        id: String,
        /// e.g. "1 month", "2 months", "45d"
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Make a request due now, ending its grace period early.
    Expedite { id: String },
    /// Give an exhausted cleaner another round of attempts.
    Retry { id: String, cleaner: String },
    /// Skip a cleaner, with a justification.
    Skip {
        id: String,
        cleaner: String,
        #[arg(long)]
        reason: String,
    },
    /// Record a cleaner's result by hand (the `manual` kind, or a cleaner that reported
    /// out of band).
    Confirm {
        id: String,
        cleaner: String,
        /// The attempt this result is for (see `lethe show`).
        #[arg(long, default_value_t = 1)]
        attempt: u32,
        /// Record a failure instead of a success.
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        detail: Option<String>,
    },
    /// Export requests with their events and verification results.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The master key: its fingerprint, and rotation.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

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

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Every request received in [FROM, TO), streamed to stdout.
    Export {
        /// First day (YYYY-MM-DD) or time (RFC 3339), inclusive.
        #[arg(long)]
        from: String,
        /// Last day (inclusive) or time (exclusive).
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value_t = audit::ExportFormat::Jsonl)]
        format: audit::ExportFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild a read model (or all) from the log.
    Rebuild {
        /// requests; all when absent
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token once, with the `[[tokens]]` block to add to lethe.toml.
    Create {
        /// requests:write, requests:read, audit:read, admin or cleaner:<name>; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
}

fn parse_identifier(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not KIND=VALUE, e.g. user_id=42"))
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load_with(
        cli.global.config.as_deref(),
        &crate::config::Environment::current()?,
    )?;
    let default_filter = if matches!(cli.command, Commands::Serve { .. }) {
        "info,sqlx=warn"
    } else {
        "warn"
    };
    telemetry::init(config.log.format, default_filter);
    let database_url = cli
        .global
        .database_url
        .clone()
        .or_else(|| config.database_url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    match cli.command {
        Commands::Serve { listen } => {
            let listen = listen
                .or_else(|| config.listen.clone())
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
            serve(config, &database_url, &listen, cli.global.dev_master_key).await?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Migrate => {
            Database::open(&database_url, true).await?;
            println!("database {} is up to date", redact(&database_url));
            Ok(ExitCode::SUCCESS)
        }
        Commands::Submit {
            subject,
            jurisdiction,
            source,
            reason,
            external_id,
            tags,
            json,
        } => {
            let key_source = KeySource::for_database(&database_url, cli.global.dev_master_key)?;
            let database = Database::open(&database_url, true).await?;
            let key = master_key(&database, &key_source).await?;
            let requests = sealed_requests(&database, config, &key);
            let submission = Submission {
                subject: subject.into_iter().collect::<BTreeMap<_, _>>(),
                jurisdiction,
                source,
                reason,
                external_id,
                tags,
            };
            let submitted = requests.submit(submission, None, &cli_actor()).await?;
            let request = &submitted.loaded.request;
            let view = SubmittedView::new(request, key.cancel_token(request.id));
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                let verb = if submitted.created {
                    "submitted"
                } else {
                    "already submitted"
                };
                println!("{} {verb}", view.id);
                println!("  status:       {}", view.status);
                println!("  due at:       {}", view.due_at);
                println!("  deadline:     {}", view.deadline);
                println!("  cancel token: {}", view.cancel_token);
            }
            Ok(ExitCode::SUCCESS)
        }
        Commands::Show { id, json } => {
            let store = Database::open(&database_url, true).await?.events;
            let requests = Requests::new(store, Arc::new(config));
            let id = parse_id(&id)?;
            let loaded = requests
                .load(id)
                .await?
                .ok_or_else(|| anyhow!("no request {id}"))?;
            let view = RequestView::new(&loaded);
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", render_request(&view));
            }
            Ok(ExitCode::SUCCESS)
        }
        Commands::History { id, json } => {
            let database = Database::open(&database_url, true).await?;
            let requests = Requests::new(database.events.clone(), Arc::new(config))
                .with_read_models(database.read_models.clone());
            let requests =
                match reading_key(&database, &database_url, cli.global.dev_master_key).await {
                    Some(key) => requests.with_sealing(key, database.keys.clone()),
                    None => requests,
                };
            let id = parse_id(&id)?;
            let view = history(&requests, id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", render_history(&view));
            }
            Ok(if view.verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Commands::Keys { command } => {
            keys_command(command, &database_url, cli.global.dev_master_key).await
        }
        Commands::Token {
            command: TokenCommand::Create { scopes, name },
        } => {
            for scope in &scopes {
                let known = crate::config::SCOPES.contains(&scope.as_str())
                    || scope
                        .strip_prefix("cleaner:")
                        .is_some_and(|n| lethe_domain::CleanerName::parse(n).is_ok());
                if !known {
                    bail!(
                        "{scope:?} is not a scope; use {}, or cleaner:<name>",
                        crate::config::SCOPES.join(", ")
                    );
                }
            }
            let mut bytes = [0_u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            let token = format!("lethe_{}", hex::encode(bytes));
            let name = name.unwrap_or_else(|| format!("token-{}", &hex::encode(&bytes[..4])));
            println!("Token (shown once; store it now):\n\n  {token}\n");
            println!("Add to lethe.toml:\n");
            println!("[[tokens]]");
            println!("name = {name:?}");
            println!("sha256 = \"{}\"", crate::http::auth::token_hash(&token));
            println!("scopes = {scopes:?}");
            Ok(ExitCode::SUCCESS)
        }
        Commands::Audit {
            command: AuditCommand::Export { from, to, format },
        } => {
            let from = export_bound(&from, false)?;
            let to = export_bound(&to, true)?;
            if to <= from {
                bail!("--to must be after --from");
            }
            let database = Database::open(&database_url, true).await?;
            crate::read_models::catch_up(&database.events, &database.read_models).await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let (written, failed) = audit::export(
                database.events.as_ref(),
                database.read_models.as_ref(),
                from,
                to,
                format,
                &mut out,
            )
            .await?;
            drop(out);
            eprintln!("exported {written} requests; {failed} failed verification");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Commands::Projections {
            command: ProjectionsCommand::Rebuild { name },
        } => {
            let database = Database::open(&database_url, true).await?;
            let names: Vec<String> = match name {
                Some(name) => vec![name],
                None => crate::read_models::ALL
                    .iter()
                    .map(|n| (*n).to_owned())
                    .collect(),
            };
            for name in names {
                let started = std::time::Instant::now();
                let mut last_report = std::time::Instant::now();
                let mut report = |handled: u64, head: i64| {
                    if last_report.elapsed() >= std::time::Duration::from_secs(1) {
                        println!(
                            "rebuilding {name}: {handled} events (log head at position {head})"
                        );
                        last_report = std::time::Instant::now();
                    }
                };
                let handled = crate::read_models::rebuild(
                    &database.events,
                    &database.read_models,
                    &name,
                    &mut report,
                )
                .await?;
                let seconds = started.elapsed().as_secs_f64();
                #[allow(clippy::cast_precision_loss)]
                let rate = handled as f64 / seconds.max(0.001);
                println!("rebuilt {name}: {handled} events in {seconds:.1} s ({rate:.0} events/s)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Commands::Cancel { .. }
        | Commands::Reject { .. }
        | Commands::Hold { .. }
        | Commands::Release { .. }
        | Commands::Extend { .. }
        | Commands::Expedite { .. }
        | Commands::Retry { .. }
        | Commands::Skip { .. }
        | Commands::Confirm { .. } => {
            // Commands on a request's state read no personal data: no key needed, except a
            // result typed by hand, which is scrubbed of the subject's identifiers (so the
            // subject must open).
            let key_source = matches!(cli.command, Commands::Confirm { .. })
                .then(|| KeySource::for_database(&database_url, cli.global.dev_master_key))
                .transpose()?;
            let database = Database::open(&database_url, true).await?;
            let mut requests = Requests::new(database.events.clone(), Arc::new(config))
                .with_read_models(database.read_models.clone());
            if let Some(key_source) = key_source {
                let key = master_key(&database, &key_source).await?;
                requests = requests.with_sealing(key, database.keys.clone());
            }
            let loaded = operate(&requests, cli.command).await?;
            print!("{}", render_request(&RequestView::new(&loaded)));
            Ok(ExitCode::SUCCESS)
        }
        Commands::Verify { id } => {
            let store = Database::open(&database_url, true).await?.events;
            match id {
                Some(id) => {
                    let id = parse_id(&id)?;
                    // Verification reads no personal data: no keys needed.
                    let view = history(&Requests::new(store.clone(), Arc::new(config)), id).await?;
                    match &view.chain_error {
                        None => {
                            println!("ok: request {id}: {} events verified", view.events.len());
                            Ok(ExitCode::SUCCESS)
                        }
                        Some(e) => {
                            println!(
                                "FAILED: request {id} at version {} (position {}): {}",
                                e.version, e.position, e.problem
                            );
                            Ok(ExitCode::FAILURE)
                        }
                    }
                }
                None => {
                    let report = audit::verify_all(&*store).await?;
                    for f in &report.failures {
                        println!(
                            "FAILED: request {} at version {} (position {}): {}",
                            f.stream_id, f.version, f.position, f.problem
                        );
                    }
                    if report.failures.is_empty() {
                        println!(
                            "ok: {} requests, {} events, every hash chain verified",
                            report.streams, report.events
                        );
                        Ok(ExitCode::SUCCESS)
                    } else {
                        println!(
                            "{} of {} requests failed verification",
                            report.failures.len(),
                            report.streams
                        );
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
        }
    }
}

/// Builds a command from the request's current state.
type Decide = Box<dyn Fn(&Request) -> Command + Send + Sync>;

/// Runs one administrative command through the same path the HTTP API uses.
async fn operate(requests: &Requests, command: Commands) -> anyhow::Result<LoadedRequest> {
    let metadata = EventMetadata::new(cli_actor());
    // A result typed by hand is scrubbed of the subject's identifiers like a cleaner's.
    let reports_result = matches!(command, Commands::Confirm { .. });
    let now = chrono::Utc::now;
    let cleaner = |raw: &str| {
        lethe_domain::CleanerName::parse(raw).map_err(|e| anyhow!("cleaner {raw:?}: {}", e.message))
    };
    let (id, make): (String, Decide) = match command {
        Commands::Cancel { id, reason } => (
            id,
            Box::new(move |_| Command::Cancel {
                at: now(),
                reason: reason.clone(),
            }),
        ),
        Commands::Reject { id, reason } => (
            id,
            Box::new(move |_| Command::Reject {
                at: now(),
                reason: reason.clone(),
            }),
        ),
        Commands::Hold { id, reason } => (
            id,
            Box::new(move |_| Command::PlaceHold {
                at: now(),
                reason: reason.clone(),
            }),
        ),
        Commands::Release { id, reason } => (
            id,
            Box::new(move |_| Command::ReleaseHold {
                at: now(),
                reason: reason.clone(),
            }),
        ),
        Commands::Extend { id, by, reason } => {
            let by: lethe_domain::Span = by.parse().map_err(|e: String| anyhow!("--by: {e}"))?;
            (
                id,
                Box::new(move |_| Command::ExtendDeadline {
                    at: now(),
                    by,
                    reason: reason.clone(),
                }),
            )
        }
        Commands::Expedite { id } => {
            let config = requests.config().clone();
            (
                id,
                Box::new(move |request| Command::MarkDue {
                    at: now(),
                    cleaners: plan_cleaners(&config, request),
                    expedite: true,
                }),
            )
        }
        Commands::Retry { id, cleaner: name } => {
            let cleaner = cleaner(&name)?;
            let extra = requests
                .config()
                .cleaner(&cleaner)
                .map_or(1, |c| c.retry.max_attempts);
            (
                id,
                Box::new(move |_| Command::RetryCleaner {
                    cleaner: cleaner.clone(),
                    at: now(),
                    extra_attempts: extra,
                }),
            )
        }
        Commands::Skip {
            id,
            cleaner: name,
            reason,
        } => {
            let cleaner = cleaner(&name)?;
            (
                id,
                Box::new(move |_| Command::SkipCleaner {
                    cleaner: cleaner.clone(),
                    at: now(),
                    reason: reason.clone(),
                }),
            )
        }
        Commands::Confirm {
            id,
            cleaner: name,
            attempt,
            failed,
            detail,
        } => {
            let cleaner = cleaner(&name)?;
            if failed {
                let error = detail.unwrap_or_else(|| "reported failed by hand".to_owned());
                (
                    id,
                    Box::new(move |_| Command::RecordCleanerFailure {
                        cleaner: cleaner.clone(),
                        attempt,
                        at: now(),
                        error: error.clone(),
                        status_code: None,
                        retryable: true,
                        retry_after_seconds: None,
                    }),
                )
            } else {
                (
                    id,
                    Box::new(move |_| Command::RecordCleanerSuccess {
                        cleaner: cleaner.clone(),
                        attempt,
                        at: now(),
                        deleted: None,
                        detail: detail.clone(),
                    }),
                )
            }
        }
        other => bail!("{other:?} is not an administrative command"),
    };
    let id = parse_id(&id)?;
    if reports_result {
        return Ok(requests.execute_result(id, &metadata, make).await?);
    }
    Ok(requests.execute(id, &metadata, make).await?)
}

/// The master key from `source`, checked against the database's (and recorded in a database
/// that records none yet).
async fn master_key(database: &Database, source: &KeySource) -> anyhow::Result<MasterKey> {
    let key = MasterKey::load(source)?;
    key_ring::open(database.keys.as_ref(), &key).await?;
    Ok(key)
}

/// For commands that only read: the master key if there is one and it is the database's;
/// otherwise a warning, and the subject is shown sealed.
async fn reading_key(
    database: &Database,
    database_url: &str,
    dev_master_key: bool,
) -> Option<MasterKey> {
    let sealed = "the subject is shown sealed";
    let source = match KeySource::for_database(database_url, dev_master_key) {
        Ok(source) => source,
        Err(_) => {
            eprintln!("warning: no master key ({MASTER_KEY_ENV} is not set): {sealed}");
            return None;
        }
    };
    // A development key that does not exist yet opens nothing: do not create one to read.
    if matches!(&source, KeySource::Development(path) if !path.exists()) {
        eprintln!(
            "warning: no master key ({MASTER_KEY_ENV} is not set, and there is no {}): {sealed}",
            source.path().display()
        );
        return None;
    }
    let key = match MasterKey::load(&source) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("warning: {e}: {sealed}");
            return None;
        }
    };
    match key_ring::check(database.keys.as_ref(), &key).await {
        Ok(()) => Some(key),
        Err(e) => {
            eprintln!("warning: {e}; {sealed}");
            None
        }
    }
}

async fn keys_command(
    command: KeysCommand,
    database_url: &str,
    dev_master_key: bool,
) -> anyhow::Result<ExitCode> {
    let source = KeySource::for_database(database_url, dev_master_key)?;
    let database = Database::open(database_url, true).await?;
    match command {
        KeysCommand::Status => {
            let (recorded, _) = database.keys.recorded_keys().await?;
            match MasterKey::load(&source) {
                Ok(key) => println!(
                    "configured key: {} ({})",
                    key.fingerprint(),
                    source.path().display()
                ),
                Err(e) => println!("configured key: none ({e})"),
            }
            if recorded.is_empty() {
                println!("the database records no key yet");
            }
            for key in &recorded {
                let role = if key.retiring {
                    "retiring (a rotation is unfinished)"
                } else {
                    "current"
                };
                println!("database key:   {} {role}", key.fingerprint);
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate {
            new_key_file,
            settle,
            batch,
        } => {
            let key = master_key(&database, &source).await?;
            let new = KeyMaterial::read(&new_key_file)?;
            let (old, fingerprint) = (key.fingerprint(), new.fingerprint());
            let options = keys::RotateOptions { settle, batch };
            let outcome = keys::rotate(
                database.events.as_ref(),
                database.keys.as_ref(),
                &key,
                new,
                options,
                |progress| {
                    match progress {
                        keys::Progress::Recorded { resumed: false } => println!(
                            "recorded the new key {fingerprint}; waiting {} for running \
                             instances to learn it",
                            humantime::format_duration(settle)
                        ),
                        keys::Progress::Recorded { resumed: true } => {
                            println!("resuming the rotation to {fingerprint}");
                        }
                        keys::Progress::Converted(n) => println!("re-wrapped {n} data keys"),
                    }
                    std::ops::ControlFlow::Continue(())
                },
            )
            .await?;
            if let keys::Rotated::Finished { converted } = outcome {
                println!(
                    "rotated from {old} to {fingerprint}: {converted} data keys re-wrapped and \
                     their blind indexes re-keyed; the old key is retired. Set \
                     {MASTER_KEY_ENV}={} for every instance.",
                    new_key_file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The requests service with everything a CLI command may need: read models and sealing.
fn sealed_requests(database: &Database, config: Config, key: &MasterKey) -> Requests {
    Requests::new(database.events.clone(), Arc::new(config))
        .with_read_models(database.read_models.clone())
        .with_sealing(key.clone(), database.keys.clone())
}

async fn history(requests: &Requests, id: RequestId) -> anyhow::Result<HistoryView> {
    let store = requests.store();
    // The head first: events appended after it only extend the chain it vouches for.
    let head = store.stream_head(id).await?;
    let events = store.read_stream(id, 0).await?;
    if events.is_empty() {
        bail!("no request {id}");
    }
    let loaded = crate::app::loaded(events)?;
    let subject = requests.subject_of(&loaded.request).await?;
    Ok(HistoryView::new(&loaded, head.as_ref(), subject)?)
}

/// A `--from`/`--to` bound: an RFC 3339 time, or a date (a `--to` date includes that day).
fn export_bound(raw: &str, end: bool) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| anyhow!("{raw:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))?;
    let day = if end {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    };
    Ok(day.and_time(chrono::NaiveTime::MIN).and_utc())
}

fn parse_id(raw: &str) -> anyhow::Result<RequestId> {
    raw.parse::<RequestId>()
        .map_err(|_| anyhow!("{raw:?} is not a request id (a UUID)"))
}

fn cli_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    format!("cli:{user}")
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn serve(
    config: Config,
    database_url: &str,
    listen: &str,
    dev_master_key: bool,
) -> anyhow::Result<()> {
    let source = KeySource::for_database(database_url, dev_master_key)?;
    let database = Database::open_with(database_url, true, config.database.acquire_timeout.0)
        .await
        .with_context(|| format!("cannot open the database {}", redact(database_url)))?;
    let key = master_key(&database, &source).await?;
    // Learns the new key of a rotation begun elsewhere (and forgets the retired one).
    let refresh = key_ring::spawn_refresh(
        database.keys.clone(),
        key.clone(),
        key_ring::REFRESH_INTERVAL,
    );
    let config = Arc::new(config);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    if config.tokens.is_empty() {
        if !address.ip().is_loopback() {
            bail!(
                "no [[tokens]] are configured, so auth is off; refusing to listen on {address}, \
                 which is not a loopback address (create a token with `lethe token create`)"
            );
        }
        tracing::warn!(
            listen = %address,
            "AUTH IS OFF: no [[tokens]] configured; every caller has every scope. \
             Serving on loopback only."
        );
    }
    let public_url = config
        .engine
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let requests = Requests::new(database.events.clone(), config.clone())
        .with_read_models(database.read_models.clone())
        .with_sealing(key.clone(), database.keys.clone());
    let runtime = Runtime::start(
        requests.clone(),
        database.workflow.clone(),
        config,
        key.clone(),
        public_url,
    );
    let state = AppState { requests, key };
    tracing::info!(listen = %address, database = %redact(database_url), "lethe is serving");
    crate::http::serve(listener, router(state), shutdown_signal()).await?;
    runtime.stop().await;
    refresh.abort();
    tracing::info!("lethe stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
    // Event streams never end by themselves: end them so the shutdown can finish.
    crate::http::events::close_streams();
}

fn render_request(view: &RequestView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Request {}", view.id);
    let _ = writeln!(out, "  status:        {}", view.status);
    let _ = writeln!(out, "  jurisdiction:  {}", view.jurisdiction);
    if let Some(source) = &view.source {
        let _ = writeln!(out, "  source:        {source}");
    }
    let _ = writeln!(out, "  received at:   {}", view.received_at);
    let _ = writeln!(out, "  due at:        {}", view.due_at);
    let _ = writeln!(out, "  deadline:      {}", view.deadline);
    for reminder in &view.reminders {
        let outcome = match (reminder.status, reminder.reason, reminder.outcome_at) {
            ("pending", ..) => "scheduled".to_owned(),
            (_, Some(reason), _) => format!("not sent: {reason}"),
            (status, None, Some(at)) => format!("{status} at {at}"),
            (status, None, None) => status.to_owned(),
        };
        let _ = writeln!(out, "  reminder:      {} ({outcome})", reminder.at);
    }
    if let Some(hold) = &view.hold {
        let _ = writeln!(out, "  on hold since: {} ({})", hold.since, hold.reason);
    }
    for cleaner in &view.cleaners {
        let _ = write!(
            out,
            "  cleaner {}: {} after {}/{} attempts",
            cleaner.name, cleaner.status, cleaner.attempts, cleaner.max_attempts
        );
        if let Some(error) = &cleaner.last_error {
            let _ = write!(out, " (last error: {error})");
        }
        out.push('\n');
    }
    if let Some(at) = view.closed_at {
        let _ = writeln!(out, "  closed at:     {at}");
    }
    out
}

fn render_history(view: &HistoryView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "History of request {}", view.id);
    match &view.subject {
        SubjectView::Identifiers(ids) => {
            let list: Vec<String> = ids.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "Subject: {}", list.join(", "));
        }
        SubjectView::Shredded => {
            let _ = writeln!(out, "Subject: shredded (the data key was destroyed)");
        }
        SubjectView::Sealed => {
            let _ = writeln!(
                out,
                "Subject: sealed (the master key that opens it is not at hand)"
            );
        }
    }
    for e in &view.events {
        let _ = writeln!(
            out,
            "#{:<3} {}  {:<17} by {:<20} -> {}",
            e.version,
            e.recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.event_type,
            e.actor,
            e.status_after
        );
        let _ = writeln!(
            out,
            "      position {}  command {}  correlation {}",
            e.position,
            e.command_id.as_deref().unwrap_or("-"),
            e.correlation_id
        );
        let _ = writeln!(out, "      {}", e.data);
        let _ = writeln!(out, "      hash {}", e.hash);
    }
    match &view.chain_error {
        None => {
            let _ = writeln!(out, "Hash chain: verified ({} events)", view.events.len());
        }
        Some(e) => {
            let _ = writeln!(
                out,
                "Hash chain: BROKEN at version {} (position {}): {}",
                e.version, e.position, e.problem
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://lethe:s3cret@db:5432/lethe"),
            "postgres://lethe:***@db:5432/lethe"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            redact("sqlite://./lethe-data/lethe.db"),
            "sqlite://./lethe-data/lethe.db"
        );
    }

    #[test]
    fn subject_identifiers_parse_as_kind_equals_value() {
        assert_eq!(
            parse_identifier("user_id=42").unwrap(),
            ("user_id".into(), "42".into())
        );
        assert_eq!(
            parse_identifier("note=a=b").unwrap(),
            ("note".into(), "a=b".into())
        );
        assert!(parse_identifier("42").is_err());
    }
}
