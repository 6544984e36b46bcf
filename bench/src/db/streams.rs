//! Realistic event streams, decided by the aggregate, for filling the log.

use std::collections::BTreeMap;

use anyhow::anyhow;
use lethe_domain::command::Receive;
use lethe_domain::{Aggregate, Command, DeletionRequest, Jurisdiction, RequestId, RequestState};
use lethe_domain::{Event, Subject};
use lethe_engine::config::Config;
use lethe_engine::store::now_micros;
use uuid::Uuid;

/// 64 random hex digits, like a SHA-256.
pub(super) fn random_hash() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

/// The first `len` (at most 10) events of a realistic request: `Received`, both reminders,
/// three holds placed and released, and a deadline extension — decided by the aggregate so
/// that they fold and replay like real ones.
pub fn received_stream(
    config: &Config,
    len: usize,
    n: u64,
) -> anyhow::Result<(RequestId, Vec<Event>)> {
    let id = RequestId::from_uuid(Uuid::now_v7());
    let at = now_micros();
    let jurisdiction = Jurisdiction::parse("gdpr").map_err(|e| anyhow!("{e}"))?;
    let policy = config
        .request_policy(&jurisdiction, None)
        .ok_or_else(|| anyhow!("no gdpr policy"))?;
    let subject = Subject::parse(BTreeMap::from([
        ("user_id".to_owned(), format!("bench-user-{n}")),
        ("email".to_owned(), format!("bench-user-{n}@example.com")),
    ]))
    .map_err(|e| anyhow!("{e}"))?;
    let hold = |n: u32| Command::PlaceHold {
        at,
        reason: format!("litigation hold #{n} pending review by legal"),
    };
    let release = || Command::ReleaseHold {
        at,
        reason: Some("released by legal".to_owned()),
    };
    let commands = vec![
        Command::Receive(Receive {
            request_id: id,
            subject: subject.into(),
            jurisdiction,
            source: Some("benchmark".to_owned()),
            reason: Some("account closed".to_owned()),
            external_id: None,
            tags: vec!["bench".to_owned()],
            received_at: at,
            policy,
        }),
        Command::RecordReminderSent {
            index: 0,
            at,
            calls: 1,
        },
        Command::RecordReminderSent {
            index: 1,
            at,
            calls: 1,
        },
        hold(1),
        release(),
        hold(2),
        release(),
        hold(3),
        release(),
        Command::ExtendDeadline {
            at,
            by: lethe_domain::Span::months(1),
            reason: "complex request".to_owned(),
        },
    ];
    let mut state = RequestState::NotReceived;
    let mut events = Vec::with_capacity(len);
    for command in commands.into_iter().take(len) {
        for event in DeletionRequest::handle_command(&state, command).map_err(|e| anyhow!("{e}"))? {
            state = DeletionRequest::apply_event(state, event.clone());
            events.push(event);
        }
    }
    Ok((id, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::redact;

    #[test]
    fn a_full_stream_has_ten_events() {
        let (_, events) = received_stream(&Config::default(), 10, 7).unwrap();
        let types: Vec<_> = events.iter().map(Event::event_type).collect();
        assert_eq!(
            types,
            [
                "Received",
                "ReminderSent",
                "ReminderSent",
                "HoldPlaced",
                "HoldReleased",
                "HoldPlaced",
                "HoldReleased",
                "HoldPlaced",
                "HoldReleased",
                "DeadlineExtended"
            ]
        );
        assert_eq!(
            received_stream(&Config::default(), 3, 7).unwrap().1.len(),
            3
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn a_hash_has_64_hex_digits() {
        let hash = random_hash();
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
