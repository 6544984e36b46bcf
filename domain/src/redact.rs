//! A cleaner's words about a subject, made fit for the log: every text a cleaner reports (the
//! `detail` of a success, the error of a failure) has the subject's identifiers replaced by
//! `[redacted]` before it is recorded, whichever way it came (a synchronous HTTP answer, the
//! HTTP result endpoint, a Kafka result, `lethe confirm`). The log is immutable and outlives
//! the subject's key (crypto-shredding): an identifier copied into it could never be erased.

use std::collections::BTreeMap;

use crate::Command;

/// What replaces an identifier.
pub const REDACTED: &str = "[redacted]";

/// The most of a reported result's text recorded, in characters, counted after redaction (so
/// that an identifier across the cut is redacted whole, not half kept).
pub const MAX_DETAIL_CHARS: usize = 1024;

/// Replaces every identifier value of the subject in `text` by [`REDACTED`], longest first so
/// that a value containing another is not half-replaced.
pub fn redact(text: &str, subject: &BTreeMap<String, String>) -> String {
    let mut values: Vec<&str> = subject
        .values()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
        .into_iter()
        .fold(text.to_owned(), |text, value| text.replace(value, REDACTED))
}

/// `command` with the cleaner's text redacted and cut to [`MAX_DETAIL_CHARS`]; any other
/// command as it is.
pub fn scrub_result(command: Command, subject: &BTreeMap<String, String>) -> Command {
    let scrub = |text: &str| {
        redact(text, subject)
            .chars()
            .take(MAX_DETAIL_CHARS)
            .collect::<String>()
    };
    match command {
        Command::RecordCleanerSuccess {
            cleaner,
            attempt,
            at,
            deleted,
            detail,
        } => Command::RecordCleanerSuccess {
            cleaner,
            attempt,
            at,
            deleted,
            detail: detail.as_deref().map(scrub),
        },
        Command::RecordCleanerFailure {
            cleaner,
            attempt,
            at,
            error,
            status_code,
            retryable,
            retry_after_seconds,
        } => Command::RecordCleanerFailure {
            cleaner,
            attempt,
            at,
            error: scrub(&error),
            status_code,
            retryable,
            retry_after_seconds,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use crate::CleanerName;
    use chrono::Utc;

    use super::*;

    fn subject() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("user_id".to_owned(), "ada".to_owned()),
            ("email".to_owned(), "ada@example.com".to_owned()),
        ])
    }

    #[test]
    fn redaction_replaces_longer_values_first() {
        assert_eq!(
            redact("no ada@example.com or ada here", &subject()),
            "no [redacted] or [redacted] here"
        );
    }

    #[test]
    fn an_identifier_across_the_cut_is_redacted_whole() {
        let text = format!("{}ada@example.com", "x".repeat(MAX_DETAIL_CHARS - 5));
        let Command::RecordCleanerSuccess { detail, .. } = scrub_result(
            Command::RecordCleanerSuccess {
                cleaner: CleanerName::parse("crm").unwrap(),
                attempt: 1,
                at: Utc::now(),
                deleted: None,
                detail: Some(text),
            },
            &subject(),
        ) else {
            panic!("still a success");
        };
        let detail = detail.unwrap();
        assert_eq!(detail.chars().count(), MAX_DETAIL_CHARS);
        assert!(detail.ends_with("x[reda"), "{detail}");
        assert!(!detail.contains("ada"), "{detail}");
    }

    #[test]
    fn a_failure_s_error_is_scrubbed_too() {
        let Command::RecordCleanerFailure { error, .. } = scrub_result(
            Command::RecordCleanerFailure {
                cleaner: CleanerName::parse("crm").unwrap(),
                attempt: 2,
                at: Utc::now(),
                error: "no account for ada@example.com".to_owned(),
                status_code: None,
                retryable: true,
                retry_after_seconds: None,
            },
            &subject(),
        ) else {
            panic!("still a failure");
        };
        assert_eq!(error, "no account for [redacted]");
    }
}
