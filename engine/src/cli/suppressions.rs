//! `lethe suppressions`: whether identifiers belong to an erased subject (`check`), and an
//! administrator's lifting of a request's suppression with a reason (`lift`), through the
//! application service as over HTTP (docs/OPERATIONS.md, "Suppression after erasure").

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;

use super::render::render_request;
use super::requests::parse_identifier;
use super::{cli_actor, parse_id, Context};
use crate::app::suppression::now;
use crate::app::views::RequestView;
use crate::app::EventMetadata;

#[derive(Debug, Subcommand)]
pub enum SuppressionsCommand {
    /// Whether these identifiers belong to an erased subject (exit 1 when they do): the
    /// erased requests they match, with their ids and dates, as JSON.
    Check {
        /// An identifier, e.g. --subject email=a@example.com (repeatable).
        #[arg(long = "subject", value_name = "KIND=VALUE", required = true, value_parser = parse_identifier)]
        subject: Vec<(String, String)>,
    },
    /// Lift a request's suppression: its entries answer no more (recorded as
    /// `SuppressionLifted` with the reason).
    Lift {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

pub(super) async fn run(
    context: &Context,
    command: SuppressionsCommand,
) -> anyhow::Result<ExitCode> {
    let database = context.database().await?;
    let requests = context.app(&database, None);
    match command {
        SuppressionsCommand::Check { subject } => {
            database.catch_up_projections().await?;
            let identifiers: BTreeMap<String, String> = subject.into_iter().collect();
            let answer = requests.check_suppressions(identifiers, now()).await?;
            outln!("{}", serde_json::to_string_pretty(&answer)?)?;
            Ok(if answer.suppressed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        SuppressionsCommand::Lift { id, reason } => {
            let metadata = EventMetadata::new(cli_actor());
            let loaded = requests
                .lift_suppression(parse_id(&id)?, &reason, &metadata)
                .await?;
            out!("{}", render_request(&RequestView::new(&loaded)))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
