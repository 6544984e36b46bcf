//! The administrative commands on one request after intake: cancel, reject, hold, release,
//! extend, expedite, retry and skip a cleaner, and confirm a cleaner's result by hand. Each
//! is one command through the application service, as over HTTP; the answer is the request
//! as it stands afterwards.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use clap::Subcommand;
use lethe_domain::state::Request;
use lethe_domain::{CleanerName, Command};

use super::render::render_request;
use super::{cli_actor, parse_id, plan_cleaners, Context, EventMetadata};
use crate::app::views::RequestView;
use crate::app::{LoadedRequest, Requests};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
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
}

pub(super) async fn run(context: &Context, command: AdminCommand) -> anyhow::Result<ExitCode> {
    // Commands on a request's state read no personal data: no key needed, except a result
    // typed by hand, which is scrubbed of the subject's identifiers (so the subject must
    // open).
    let key_source = matches!(command, AdminCommand::Confirm { .. })
        .then(|| context.key_source())
        .transpose()?;
    let database = context.database().await?;
    let key = match key_source {
        Some(source) => Some(database.master_key(&source).await?),
        None => None,
    };
    let loaded = operate(&context.app(&database, key), command).await?;
    print!("{}", render_request(&RequestView::new(&loaded)));
    Ok(ExitCode::SUCCESS)
}

/// Builds a command from the request's current state.
type Decide = Box<dyn Fn(&Request) -> Command + Send + Sync>;

/// Runs one administrative command through the same path the HTTP API uses.
async fn operate(requests: &Requests, command: AdminCommand) -> anyhow::Result<LoadedRequest> {
    let metadata = EventMetadata::new(cli_actor());
    // A result typed by hand is scrubbed of the subject's identifiers like a cleaner's.
    let reports_result = matches!(command, AdminCommand::Confirm { .. });
    let (id, make) = decide(requests.config(), command)?;
    let id = parse_id(&id)?;
    if reports_result {
        return Ok(requests.execute_result(id, &metadata, make).await?);
    }
    Ok(requests.execute(id, &metadata, make).await?)
}

fn cleaner(raw: &str) -> anyhow::Result<CleanerName> {
    CleanerName::parse(raw).map_err(|e| anyhow!("cleaner {raw:?}: {}", e.message))
}

/// The request id as typed, and the command to run on it.
fn decide(config: &Arc<Config>, command: AdminCommand) -> anyhow::Result<(String, Decide)> {
    let now = chrono::Utc::now;
    let decided: (String, Decide) = match command {
        AdminCommand::Cancel { id, reason } => (
            id,
            Box::new(move |_| Command::Cancel {
                at: now(),
                reason: reason.clone(),
            }),
        ),
        AdminCommand::Reject { id, reason } => (
            id,
            Box::new(move |_| Command::Reject {
                at: now(),
                reason: reason.clone(),
            }),
        ),
        AdminCommand::Hold { id, reason } => (
            id,
            Box::new(move |_| Command::PlaceHold {
                at: now(),
                reason: reason.clone(),
            }),
        ),
        AdminCommand::Release { id, reason } => (
            id,
            Box::new(move |_| Command::ReleaseHold {
                at: now(),
                reason: reason.clone(),
            }),
        ),
        AdminCommand::Extend { id, by, reason } => {
            let by: lethe_domain::Span = by.parse().map_err(|e: String| anyhow!("--by: {e}"))?;
            let make = move |_: &Request| Command::ExtendDeadline {
                at: now(),
                by,
                reason: reason.clone(),
            };
            (id, Box::new(make))
        }
        AdminCommand::Expedite { id } => {
            let config = config.clone();
            let make = move |request: &Request| Command::MarkDue {
                at: now(),
                cleaners: plan_cleaners(&config, request),
                expedite: true,
            };
            (id, Box::new(make))
        }
        AdminCommand::Retry { id, cleaner: name } => {
            let cleaner = cleaner(&name)?;
            let extra = config.cleaner(&cleaner).map_or(1, |c| c.retry.max_attempts);
            let make = move |_: &Request| Command::RetryCleaner {
                cleaner: cleaner.clone(),
                at: now(),
                extra_attempts: extra,
            };
            (id, Box::new(make))
        }
        AdminCommand::Skip {
            id,
            cleaner: name,
            reason,
        } => {
            let cleaner = cleaner(&name)?;
            let make = move |_: &Request| Command::SkipCleaner {
                cleaner: cleaner.clone(),
                at: now(),
                reason: reason.clone(),
            };
            (id, Box::new(make))
        }
        AdminCommand::Confirm {
            id,
            cleaner: name,
            attempt,
            failed,
            detail,
        } => (id, confirm(cleaner(&name)?, attempt, failed, detail)),
    };
    Ok(decided)
}

/// A cleaner's result typed by hand.
fn confirm(cleaner: CleanerName, attempt: u32, failed: bool, detail: Option<String>) -> Decide {
    let now = chrono::Utc::now;
    if failed {
        let error = detail.unwrap_or_else(|| "reported failed by hand".to_owned());
        Box::new(move |_| Command::RecordCleanerFailure {
            cleaner: cleaner.clone(),
            attempt,
            at: now(),
            error: error.clone(),
            status_code: None,
            retryable: true,
            retry_after_seconds: None,
        })
    } else {
        Box::new(move |_| Command::RecordCleanerSuccess {
            cleaner: cleaner.clone(),
            attempt,
            at: now(),
            deleted: None,
            detail: detail.clone(),
        })
    }
}
