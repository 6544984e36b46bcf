//! `lethe report`: the annual report of a year, per jurisdiction (docs/AUDIT.md).

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::Context;
use crate::app::annual_report::AnnualReport;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The calendar year (UTC) of receipt, e.g. 2026.
    #[arg(long)]
    year: i32,
    /// Only this jurisdiction (e.g. ccpa); every jurisdiction when absent.
    #[arg(long)]
    jurisdiction: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// A table for people.
    Table,
    /// The JSON of `GET /v1/reports/annual`.
    Json,
    /// A header and one row per jurisdiction.
    Csv,
}

pub(super) async fn run(context: &Context, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let database = context.database().await?;
    database.catch_up_projections().await?;
    let report = context
        .app(&database, None)
        .annual_report(args.year, args.jurisdiction.as_deref())
        .await?;
    match args.format {
        ReportFormat::Table => out!("{}", table(&report))?,
        ReportFormat::Json => outln!("{}", serde_json::to_string_pretty(&report)?)?,
        ReportFormat::Csv => out!("{}", report.to_csv()?)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn table(report: &AnnualReport) -> String {
    let mut out = format!(
        "Requests received in {} (UTC), and what came of them\n\n{:<14}{:>9}{:>9}{:>9}{:>9}{:>11}{:>7}{:>9}{:>9}\n",
        report.year,
        "jurisdiction",
        "received",
        "whole",
        "in part",
        "denied",
        "cancelled",
        "open",
        "median",
        "mean"
    );
    let days = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |d| format!("{d:.1}"));
    for j in &report.jurisdictions {
        out.push_str(&format!(
            "{:<14}{:>9}{:>9}{:>9}{:>9}{:>11}{:>7}{:>9}{:>9}\n",
            j.jurisdiction,
            j.received,
            j.complied_in_whole,
            j.complied_in_part,
            j.denied,
            j.cancelled,
            j.open,
            days(j.median_days_to_respond),
            days(j.mean_days_to_respond),
        ));
    }
    if report.jurisdictions.is_empty() {
        out.push_str("(no request was received in that year)\n");
    }
    out.push_str(
        "\nwhole/in part: complied with (completed, no cleaner skipped / some skipped); \
         median, mean: calendar days from receipt to completion or denial\n",
    );
    out
}
