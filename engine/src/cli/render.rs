//! The text the CLI prints for a request and for its history.

use std::fmt::Write as _;

use crate::app::views::{HistoryView, RequestView, SubjectView};

pub(super) fn render_request(view: &RequestView) -> String {
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
        if let Some(progress) = &cleaner.progress {
            let _ = write!(
                out,
                "; attempt {} at {}{} (reported {}, deadline {})",
                progress.attempt,
                progress.progress.done,
                progress
                    .progress
                    .total
                    .map(|total| format!(" of {total}"))
                    .unwrap_or_default(),
                progress.reported_at,
                progress.deadline
            );
        }
        out.push('\n');
    }
    if let Some(at) = view.closed_at {
        let _ = writeln!(out, "  closed at:     {at}");
    }
    if let Some(suppression) = &view.suppression {
        let _ = write!(out, "  suppressed:    since {}", suppression.since);
        if let Some(expires_at) = suppression.expires_at {
            let _ = write!(out, ", until {expires_at}");
        }
        if let (Some(at), Some(reason)) = (suppression.lifted_at, &suppression.lifted_reason) {
            let _ = write!(out, "; lifted at {at} ({reason})");
        }
        out.push('\n');
    }
    for earlier in &view.previously_erased {
        let _ = writeln!(out, "  previously erased as request {earlier}");
    }
    out
}

pub(super) fn render_history(view: &HistoryView) -> String {
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
