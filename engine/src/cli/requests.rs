//! `lethe submit`, `lethe show` and `lethe history`: intake and what a request looks like.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;

use super::render::{render_history, render_request};
use super::{cli_actor, exit_code, parse_id, Context};
use crate::app::replay::At;
use crate::app::views::SubmittedView;
use crate::app::Submission;
use crate::root::keys::{NoReadingKey, MASTER_KEY_ENV};

#[derive(Debug, Args)]
pub struct SubmitArgs {
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
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    id: String,
    /// The request as it was at this point of its history: a log position, an RFC 3339 time
    /// or a date.
    #[arg(long, value_name = "POSITION|TIME|DATE")]
    at: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    id: String,
    /// With --json: every entry also carries the whole request as it was after its event.
    #[arg(long)]
    states: bool,
    #[arg(long)]
    json: bool,
}

pub(super) fn parse_identifier(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not KIND=VALUE, e.g. user_id=42"))
}

pub(super) async fn submit(context: &Context, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let key_source = context.key_source()?;
    let database = context.database().await?;
    let key = database.master_key(&key_source).await?;
    let requests = context.app(&database, Some(key.clone()));
    let submission = Submission {
        subject: args.subject.into_iter().collect::<BTreeMap<_, _>>(),
        jurisdiction: args.jurisdiction,
        source: args.source,
        reason: args.reason,
        external_id: args.external_id,
        tags: args.tags,
    };
    let submitted = requests.submit(submission, None, &cli_actor()).await?;
    let request = &submitted.loaded.request;
    let view = SubmittedView::new(request, key.cancel_token(request.id));
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&view)?)?;
    } else {
        let verb = if submitted.created {
            "submitted"
        } else {
            "already submitted"
        };
        outln!("{} {verb}", view.id)?;
        outln!("  status:       {}", view.status)?;
        outln!("  due at:       {}", view.due_at)?;
        outln!("  deadline:     {}", view.deadline)?;
        outln!("  cancel token: {}", view.cancel_token)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn show(context: &Context, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let database = context.database().await?;
    let id = parse_id(&args.id)?;
    // The state of a request reads no personal data: no key needed.
    let requests = context.app(&database, None);
    let view = match args.at.as_deref() {
        None => requests.show(id).await?,
        Some(at) => requests.show_at(id, At::parse("--at", at)?).await?,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&view)?)?;
    } else {
        out!("{}", render_request(&view))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn history(context: &Context, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let database = context.database().await?;
    let key = database
        .reading_key(&context.database_url, context.dev_master_key)
        .await
        .map_err(|why| warn_sealed(&why))
        .ok();
    let id = parse_id(&args.id)?;
    let view = context.app(&database, key).history(id, args.states).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&view)?)?;
    } else {
        out!("{}", render_history(&view))?;
    }
    Ok(exit_code(view.verified))
}

/// Says why the history shows the subject sealed.
fn warn_sealed(why: &NoReadingKey) {
    let sealed = "the subject is shown sealed";
    match why {
        NoReadingKey::Unconfigured => {
            eprintln!("warning: no master key ({MASTER_KEY_ENV} is not set): {sealed}");
        }
        NoReadingKey::NoDevelopmentKey(source) => eprintln!(
            "warning: no master key ({MASTER_KEY_ENV} is not set, and there is no {}): {sealed}",
            source.path().display()
        ),
        NoReadingKey::Unreadable(e) => eprintln!("warning: {e}: {sealed}"),
        NoReadingKey::NotTheDatabases(e) => eprintln!("warning: {e}; {sealed}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
