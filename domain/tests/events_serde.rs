//! The stored form of events: every variant (with its optional fields present and absent)
//! survives `event_type()` + `payload()` -> `Event::from_stored`, `EVENT_TYPES` names exactly
//! the variants, and the payload keys other components read keep their names.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use lethe_domain::event::{
    Approved, Cancelled, CleanerFailed, CleanerRetried, CleanerSkipped, CleanerSucceeded,
    Completed, CoveredStore, DeadlineExtended, Due, HoldPlaced, HoldReleased, PlannedCleaner,
    PreviouslyErased, Received, Rejected, Reminded, ReminderNotSent, ReminderNotSentReason,
    ReminderSent, Shredded, Suppressed, SuppressionLifted, EVENT_TYPES,
};
use lethe_domain::{DeadlineRule, Event, Span, StoreName};
use serde_json::{json, Value};

use support::*;

/// Which variant an event is. The match has no wildcard, so a new variant does not compile
/// until it is given a position here, and `every_variant_has_an_example` then wants an example.
const fn variant(event: &Event) -> usize {
    match event {
        Event::Received(_) => 0,
        Event::Reminded(_) => 1,
        Event::Cancelled(_) => 2,
        Event::Rejected(_) => 3,
        Event::HoldPlaced(_) => 4,
        Event::HoldReleased(_) => 5,
        Event::DeadlineExtended(_) => 6,
        Event::Due(_) => 7,
        Event::CleanerSucceeded(_) => 8,
        Event::CleanerFailed(_) => 9,
        Event::CleanerRetried(_) => 10,
        Event::CleanerSkipped(_) => 11,
        Event::Completed(_) => 12,
        Event::Shredded(_) => 13,
        Event::ReminderSent(_) => 14,
        Event::ReminderNotSent(_) => 15,
        Event::Suppressed(_) => 16,
        Event::SuppressionLifted(_) => 17,
        Event::PreviouslyErased(_) => 18,
        Event::Approved(_) => 19,
    }
}

const VARIANTS: usize = 20;

/// The fixture `Received` with every optional field filled in.
fn received_in_full() -> Event {
    let Event::Received(received) = received() else {
        unreachable!("the fixture is a Received")
    };
    Event::Received(Received {
        source: Some("support-desk".to_owned()),
        reason: Some("account closed".to_owned()),
        external_id: Some("ZD-1234".to_owned()),
        tags: vec!["vip".to_owned(), "eu".to_owned()],
        ..received
    })
}

/// The fixture `Received` with every optional field empty.
fn received_bare() -> Event {
    let Event::Received(received) = received() else {
        unreachable!("the fixture is a Received")
    };
    Event::Received(Received {
        source: None,
        reason: None,
        external_id: None,
        tags: vec![],
        reminders: vec![],
        deadline_rule: DeadlineRule::CCPA,
        ..received
    })
}

/// One of every event, and of every optional field both present and absent.
fn examples() -> Vec<Event> {
    let at = after_due(3);
    let mut examples = request_examples(at);
    examples.extend(cleaner_examples(at));
    examples
}

/// Receipt, reminders, cancelling, rejecting, holds, extensions and Due.
fn request_examples(at: chrono::DateTime<chrono::Utc>) -> Vec<Event> {
    vec![
        received_in_full(),
        received_bare(),
        Event::Reminded(Reminded { index: 1, at }),
        Event::ReminderSent(ReminderSent {
            index: 0,
            at,
            calls: 2,
        }),
        Event::ReminderNotSent(ReminderNotSent {
            index: 1,
            at,
            reason: ReminderNotSentReason::NotifierFailed,
            calls: 20,
            last_error: Some("HTTP 503 Service Unavailable".to_owned()),
        }),
        Event::ReminderNotSent(ReminderNotSent {
            index: 0,
            at,
            reason: ReminderNotSentReason::NoNotifier,
            calls: 0,
            last_error: None,
        }),
        Event::Approved(Approved {
            at,
            due_at: at + chrono::TimeDelta::days(30),
            reminders: vec![at + chrono::TimeDelta::days(23)],
            reason: None,
        }),
        Event::Approved(Approved {
            at,
            due_at: at + chrono::TimeDelta::days(30),
            reminders: vec![],
            reason: Some("identity checked by phone".to_owned()),
        }),
        Event::Cancelled(Cancelled {
            at,
            reason: Some("changed my mind".to_owned()),
        }),
        Event::Cancelled(Cancelled { at, reason: None }),
        Event::Rejected(Rejected {
            at,
            reason: "identity not verified".to_owned(),
        }),
        Event::HoldPlaced(HoldPlaced {
            at,
            reason: "litigation hold".to_owned(),
        }),
        Event::HoldReleased(HoldReleased {
            at,
            reason: Some("case settled".to_owned()),
        }),
        Event::HoldReleased(HoldReleased { at, reason: None }),
        Event::DeadlineExtended(DeadlineExtended {
            at,
            by: Span { months: 1, days: 3 },
            reason: "many systems".to_owned(),
            deadline: date(2025, 5, 6),
        }),
        Event::DeadlineExtended(DeadlineExtended {
            at,
            by: Span::days(45),
            reason: "many systems".to_owned(),
            deadline: date(2025, 6, 1),
        }),
        Event::Due(Due {
            at,
            cleaners: plan(&[("billing", 3), ("crm", 8)]),
            expedited: true,
            reason: Some("the subject wrote again".to_owned()),
        }),
        Event::Due(Due {
            at,
            cleaners: vec![],
            expedited: false,
            reason: None,
        }),
        Event::Due(Due {
            at,
            cleaners: vec![PlannedCleaner {
                name: cleaner("billing"),
                max_attempts: 3,
                stores: vec![store("orders-db"), store("invoices")],
            }],
            expedited: false,
            reason: None,
        }),
    ]
}

/// Cleaner results, completion and shredding.
fn cleaner_examples(at: chrono::DateTime<chrono::Utc>) -> Vec<Event> {
    vec![
        Event::CleanerSucceeded(CleanerSucceeded {
            cleaner: cleaner("billing"),
            attempt: 2,
            at,
            deleted: Some(BTreeMap::from([
                ("rows".to_owned(), 12),
                ("files".to_owned(), 0),
            ])),
            detail: Some("purged".to_owned()),
        }),
        Event::CleanerSucceeded(CleanerSucceeded {
            cleaner: cleaner("billing"),
            attempt: 1,
            at,
            deleted: None,
            detail: None,
        }),
        Event::CleanerFailed(CleanerFailed {
            cleaner: cleaner("crm"),
            attempt: 3,
            at,
            error: "HTTP 429".to_owned(),
            status_code: Some(429),
            retryable: true,
            retry_after_seconds: Some(120),
            exhausted: false,
        }),
        Event::CleanerFailed(CleanerFailed {
            cleaner: cleaner("crm"),
            attempt: 1,
            at,
            error: "connection refused".to_owned(),
            status_code: None,
            retryable: false,
            retry_after_seconds: None,
            exhausted: true,
        }),
        Event::CleanerRetried(CleanerRetried {
            cleaner: cleaner("crm"),
            at,
            max_attempts: 11,
            reason: None,
        }),
        Event::CleanerRetried(CleanerRetried {
            cleaner: cleaner("crm"),
            at,
            max_attempts: 14,
            reason: Some("the service's schema is fixed".to_owned()),
        }),
        Event::CleanerSkipped(CleanerSkipped {
            cleaner: cleaner("crm"),
            at,
            reason: "decommissioned".to_owned(),
        }),
        Event::Completed(Completed {
            at,
            stores: Vec::new(),
        }),
        Event::Completed(Completed {
            at,
            stores: vec![CoveredStore {
                store: store("orders-db"),
                succeeded: vec![cleaner("billing")],
                skipped: vec![cleaner("crm")],
            }],
        }),
        Event::Shredded(Shredded { at }),
        Event::Suppressed(Suppressed {
            hashes: vec!["0123456789abcdef:00ff".to_owned()],
            expires_at: Some(at),
            at,
        }),
        Event::Suppressed(Suppressed {
            hashes: vec!["0123456789abcdef:00ff".to_owned()],
            expires_at: None,
            at,
        }),
        Event::SuppressionLifted(SuppressionLifted {
            reason: "asked to be contacted".to_owned(),
            at,
        }),
        Event::PreviouslyErased(PreviouslyErased {
            requests: vec![lethe_domain::RequestId::from_uuid(uuid::Uuid::nil())],
            at,
        }),
    ]
}

#[test]
fn every_variant_has_an_example() {
    let covered: BTreeSet<usize> = examples().iter().map(variant).collect();
    assert_eq!(
        covered,
        (0..VARIANTS).collect(),
        "variants without an example"
    );
}

#[test]
fn every_event_survives_the_stored_form() {
    for event in examples() {
        let payload = event.payload();
        assert!(
            payload.is_object(),
            "{} payload: {payload}",
            event.event_type()
        );
        // Through text, as the store keeps it.
        let text = serde_json::to_string(&payload).unwrap();
        let back = Event::from_stored(event.event_type(), &serde_json::from_str(&text).unwrap());
        assert_eq!(
            back.as_ref().ok(),
            Some(&event),
            "{} via {text}",
            event.event_type()
        );
    }
}

#[test]
fn the_payload_does_not_repeat_the_type() {
    for event in examples() {
        let payload = event.payload();
        assert!(
            payload.get("type").is_none() && payload.get("data").is_none(),
            "{}: {payload}",
            event.event_type()
        );
    }
}

#[test]
fn event_types_are_exactly_the_variants_names() {
    let listed: BTreeSet<&str> = EVENT_TYPES.into_iter().collect();
    assert_eq!(
        listed.len(),
        EVENT_TYPES.len(),
        "EVENT_TYPES has duplicates"
    );
    let used: BTreeSet<&str> = examples().iter().map(Event::event_type).collect();
    assert_eq!(listed, used);
    // The stored name is also the serde tag, or from_stored could not read it back.
    for event in examples() {
        let tagged = serde_json::to_value(&event).unwrap();
        assert_eq!(tagged["type"], event.event_type());
    }
}

#[test]
fn an_unknown_type_or_a_mismatched_payload_is_refused() {
    let payload = completed(after_due(1)).payload();
    assert!(Event::from_stored("Finished", &payload).is_err());
    assert!(Event::from_stored("completed", &payload).is_err());
    let reminded = Event::Reminded(Reminded {
        index: 0,
        at: during_grace(),
    });
    assert!(Event::from_stored("CleanerSkipped", &reminded.payload()).is_err());
}

#[test]
fn reading_a_payload_validates_names_and_subjects() {
    let Value::Object(good) = received().payload() else {
        panic!("a payload is an object")
    };
    for (key, bad) in [
        ("jurisdiction", json!("GDPR")),
        ("subject", json!({})),
        ("subject", json!({"e-mail": "a@b"})),
        ("request_id", json!("42")),
    ] {
        let mut payload = good.clone();
        payload.insert(key.to_owned(), bad.clone());
        let result = Event::from_stored("Received", &Value::Object(payload));
        assert!(result.is_err(), "{key} = {bad} was accepted");
    }
}

#[test]
fn optional_fields_are_left_out_when_empty() {
    let bare = received_bare().payload();
    for key in ["source", "reason", "external_id", "tags"] {
        assert!(bare.get(key).is_none(), "{key} in {bare}");
    }
    let full = received_in_full().payload();
    assert_eq!(full["tags"], json!(["vip", "eu"]));
    assert_eq!(full["external_id"], "ZD-1234");

    let due = Event::Due(Due {
        at: due_at(),
        cleaners: vec![],
        expedited: false,
        reason: None,
    })
    .payload();
    assert!(due.get("expedited").is_none(), "{due}");
    assert!(due.get("reason").is_none(), "{due}");
    // Events written before they could carry a reason read as having none.
    let approved = Event::from_stored(
        "Approved",
        &json!({"at": "2026-01-01T00:00:00Z", "due_at": "2026-01-31T00:00:00Z", "reminders": []}),
    )
    .unwrap();
    assert!(matches!(
        approved,
        Event::Approved(Approved { reason: None, .. })
    ));
    let retried = Event::CleanerRetried(CleanerRetried {
        cleaner: cleaner("crm"),
        at: due_at(),
        max_attempts: 3,
        reason: None,
    })
    .payload();
    assert!(retried.get("reason").is_none(), "{retried}");
}

#[test]
fn the_received_payload_keeps_the_names_other_components_read() {
    let payload = received().payload();
    for key in [
        "request_id",
        "subject",
        "jurisdiction",
        "received_at",
        "due_at",
        "reminders",
        "deadline_rule",
        "deadline",
    ] {
        assert!(
            payload.get(key).is_some(),
            "Received has no {key:?}: {payload}"
        );
    }
    assert_eq!(payload["request_id"], request_id().to_string());
    assert_eq!(payload["jurisdiction"], "gdpr");
    assert_eq!(
        payload["subject"],
        json!({"email": "ada@example.com", "user_id": "42"})
    );
    // Dates are ISO 8601 strings, the deadline a plain date.
    assert_eq!(payload["deadline"], "2025-04-03");
    let received_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(payload["received_at"].clone()).unwrap();
    assert_eq!(received_at, support::received_at());
    assert_eq!(payload["reminders"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_payload_written_by_hand_reads_as_expected() {
    // The stored form of a Received, as another component (or an older Lethe) would write it.
    let stored = json!({
        "request_id": "01970000-0000-7000-8000-000000000001",
        "subject": {"user_id": "42", "email": "ada@example.com"},
        "jurisdiction": "gdpr",
        "source": "portal",
        "received_at": "2025-03-03T09:00:00Z",
        "due_at": "2025-04-02T09:00:00Z",
        "reminders": ["2025-03-26T09:00:00Z", "2025-04-01T09:00:00Z"],
        "deadline_rule": {"base": {"months": 1}, "max_extension": {"months": 2}},
        "deadline": "2025-04-03"
    });
    assert_eq!(Event::from_stored("Received", &stored).unwrap(), received());

    let stored = json!({
        "cleaner": "billing",
        "attempt": 1,
        "at": "2025-04-02T10:00:00Z",
        "error": "HTTP 503",
        "status_code": 503,
        "retryable": true,
        "exhausted": false
    });
    assert_eq!(
        Event::from_stored("CleanerFailed", &stored).unwrap(),
        failed("billing", 1, after_due(1), true, false)
    );
}

#[test]
fn reminder_payloads_read_as_written_by_every_version() {
    // A Reminded as versions before ADR 16 wrote it: still read, with its fields.
    let stored = json!({"index": 1, "at": "2025-04-01T09:00:00Z"});
    assert_eq!(
        Event::from_stored("Reminded", &stored).unwrap(),
        Event::Reminded(Reminded {
            index: 1,
            at: time(2025, 4, 1, 9, 0)
        })
    );
    let stored = json!({"index": 0, "at": "2025-03-26T09:00:02Z", "calls": 3});
    assert_eq!(
        Event::from_stored("ReminderSent", &stored).unwrap(),
        Event::ReminderSent(ReminderSent {
            index: 0,
            at: time(2025, 3, 26, 9, 0) + chrono::TimeDelta::seconds(2),
            calls: 3
        })
    );
    // The reason is a snake_case name; calls and last_error are left out when there are none.
    let not_sent = Event::ReminderNotSent(ReminderNotSent {
        index: 1,
        at: due_at(),
        reason: ReminderNotSentReason::GraceOver,
        calls: 0,
        last_error: None,
    });
    assert_eq!(
        not_sent.payload(),
        json!({"index": 1, "at": "2025-04-02T09:00:00Z", "reason": "grace_over"})
    );
    let mut unknown = not_sent.payload();
    unknown["reason"] = json!("forgot");
    assert!(Event::from_stored("ReminderNotSent", &unknown).is_err());
    for reason in [
        ReminderNotSentReason::GraceOver,
        ReminderNotSentReason::Cancelled,
        ReminderNotSentReason::Rejected,
        ReminderNotSentReason::OnHold,
        ReminderNotSentReason::NoNotifier,
        ReminderNotSentReason::SubjectUnreadable,
        ReminderNotSentReason::NotifierFailed,
    ] {
        assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
    }
}

#[test]
fn sealed_and_plain_subjects_are_told_apart() {
    use lethe_domain::{SealedSubject, SubjectRecord};
    let sealed = SubjectRecord::Sealed(SealedSubject {
        sealed: "v1:00ff".to_owned(),
    });
    let json = serde_json::to_value(&sealed).unwrap();
    assert_eq!(json, serde_json::json!({"$sealed": "v1:00ff"}));
    assert_eq!(
        serde_json::from_value::<SubjectRecord>(json).unwrap(),
        sealed
    );
    let plain: SubjectRecord =
        serde_json::from_value(serde_json::json!({"user_id": "42", "sealed": "x"})).unwrap();
    assert!(matches!(plain, SubjectRecord::Plain(_)), "{plain:?}");
    // "$sealed" next to another key is neither: a sealed record has exactly one field, and
    // "$sealed" is no valid identifier kind.
    assert!(serde_json::from_value::<SubjectRecord>(
        serde_json::json!({"$sealed": "x", "user_id": "1"})
    )
    .is_err());
}

fn store(name: &str) -> StoreName {
    StoreName::parse(name).unwrap()
}

#[test]
fn events_written_before_stores_were_declared_read_and_write_back_the_same() {
    // As written before `[[stores]]`: no `stores` in a planned cleaner or in Completed.
    let due =
        json!({"at": "2026-03-01T00:00:00Z", "cleaners": [{"name": "billing", "max_attempts": 3}]});
    let completed = json!({"at": "2026-03-02T00:00:00Z"});
    let Ok(Event::Due(read)) = Event::from_stored("Due", &due) else {
        panic!("an old Due reads")
    };
    assert!(read.cleaners[0].stores.is_empty());
    assert_eq!(Event::Due(read).payload(), due);
    let Ok(Event::Completed(read)) = Event::from_stored("Completed", &completed) else {
        panic!("an old Completed reads")
    };
    assert!(read.stores.is_empty());
    assert_eq!(Event::Completed(read).payload(), completed);
}

#[test]
fn the_covered_stores_are_recorded_as_documented() {
    let payload = Event::Completed(Completed {
        at: after_due(1),
        stores: vec![CoveredStore {
            store: store("orders-db"),
            succeeded: vec![cleaner("billing")],
            skipped: vec![],
        }],
    })
    .payload();
    assert_eq!(
        payload["stores"],
        json!([{"store": "orders-db", "succeeded": ["billing"]}])
    );
    let bad = json!({"at": "2026-03-02T00:00:00Z", "stores": [{"store": "Orders DB"}]});
    assert!(Event::from_stored("Completed", &bad).is_err());
}
