//! The administrative commands on one request after intake: approve, cancel, reject, hold, release,
//! extend, expedite, retry and skip a cleaner, and confirm a cleaner's result by hand. Each
//! is one command through the application service, as over HTTP; the answer is the request
//! as it stands afterwards.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Subcommand;
use lethe_domain::{CleanerName, Span};

use super::render::render_request;
use super::{cli_actor, parse_id, Context};
use crate::app::views::RequestView;
use crate::app::{EventMetadata, LoadedRequest, Requests};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Approve a request that awaits approval (`approval = "required"`): its grace period
    /// starts now.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
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
    Expedite {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Give an exhausted cleaner another round of attempts.
    Retry {
        id: String,
        cleaner: String,
        #[arg(long)]
        reason: Option<String>,
    },
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
    out!("{}", render_request(&RequestView::new(&loaded)))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs one administrative command through the application service, as the HTTP API does.
/// The arguments are checked before the request id, as they always were.
async fn operate(requests: &Requests, command: AdminCommand) -> anyhow::Result<LoadedRequest> {
    let metadata = &EventMetadata::new(cli_actor());
    let loaded = match command {
        AdminCommand::Approve { id, reason } => {
            requests.approve(parse_id(&id)?, metadata, reason).await?
        }
        AdminCommand::Cancel { id, reason } => {
            requests.cancel(parse_id(&id)?, metadata, reason).await?
        }
        AdminCommand::Reject { id, reason } => {
            requests.reject(parse_id(&id)?, metadata, reason).await?
        }
        AdminCommand::Hold { id, reason } => {
            requests.hold(parse_id(&id)?, metadata, reason).await?
        }
        AdminCommand::Release { id, reason } => {
            requests.release(parse_id(&id)?, metadata, reason).await?
        }
        AdminCommand::Extend { id, by, reason } => {
            let by: Span = by.parse().map_err(|e: String| anyhow!("--by: {e}"))?;
            requests
                .extend(parse_id(&id)?, metadata, by, reason)
                .await?
        }
        AdminCommand::Expedite { id, reason } => {
            requests.expedite(parse_id(&id)?, metadata, reason).await?
        }
        AdminCommand::Retry {
            id,
            cleaner,
            reason,
        } => {
            let cleaner = cleaner_name(&cleaner)?;
            requests
                .retry_cleaner(parse_id(&id)?, metadata, &cleaner, reason)
                .await?
        }
        AdminCommand::Skip {
            id,
            cleaner,
            reason,
        } => {
            let cleaner = cleaner_name(&cleaner)?;
            let id = parse_id(&id)?;
            requests
                .skip_cleaner(id, metadata, &cleaner, reason)
                .await?
        }
        AdminCommand::Confirm {
            id,
            cleaner,
            attempt,
            failed,
            detail,
        } => {
            let cleaner = cleaner_name(&cleaner)?;
            let id = parse_id(&id)?;
            // A result typed by hand is scrubbed of the subject's identifiers like a
            // cleaner's.
            requests
                .confirm(id, metadata, &cleaner, attempt, failed, detail)
                .await?
        }
    };
    Ok(loaded)
}

fn cleaner_name(raw: &str) -> anyhow::Result<CleanerName> {
    CleanerName::parse(raw).map_err(|e| anyhow!("cleaner {raw:?}: {}", e.message))
}
