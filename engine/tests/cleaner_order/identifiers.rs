//! `identifiers`: data minimisation, whatever the cleaner.

use std::collections::BTreeMap;
use std::time::Duration;

use lethe_domain::event::Event;
use serde_json::json;

use super::flow_service::FlowService;
use super::many::{submit_all, user, wait_completed};
use super::support::engine::TestEngine;
use super::support::{self, TestStore};
use super::{cleaner, config};

async fn each_cleaner_receives_only_its_identifiers(store: TestStore) {
    let billing = FlowService::ok().await;
    let crm = FlowService::ok().await;
    let config = config()
        .cleaner(cleaner("billing", &billing.url).identifiers(&["email"]))
        .cleaner(cleaner("crm", &crm.url));
    let engine = TestEngine::spawn(&store, config).await;
    let both = BTreeMap::from([
        ("user_id".to_owned(), "42".to_owned()),
        ("email".to_owned(), "ada@example.com".to_owned()),
    ]);
    let ids = submit_all(&engine.requests, vec![both, user("43")]).await;
    let loaded = wait_completed(&engine.requests, &ids, Duration::from_secs(20)).await;

    // billing: the email alone, and no call at all for the subject without one.
    let calls = billing.items();
    assert_eq!(calls.len(), 1, "billing called once: {calls:?}");
    assert_eq!(calls[0].body["request_id"], ids[0].to_string());
    assert_eq!(
        calls[0].body["subject"],
        json!({"email": "ada@example.com"})
    );
    assert!(calls[0].signature_ok);
    // crm: every identifier of each subject.
    let mut crm_subjects: Vec<_> = crm
        .items()
        .iter()
        .map(|i| i.body["subject"].clone())
        .collect();
    crm_subjects.sort_by_key(ToString::to_string);
    assert_eq!(
        crm_subjects,
        [
            json!({"email": "ada@example.com", "user_id": "42"}),
            json!({"user_id": "43"})
        ]
    );
    // The request without an email: billing's attempt is recorded as succeeded, saying why.
    let billing_result = loaded[1]
        .events
        .iter()
        .find_map(|e| match e.event().unwrap() {
            Event::CleanerSucceeded(s) if s.cleaner.as_str() == "billing" => Some(s),
            _ => None,
        })
        .expect("billing's attempt recorded");
    assert_eq!(
        billing_result.detail.as_deref(),
        Some("the subject has none of the identifiers this cleaner receives")
    );
    assert_eq!(billing_result.deleted, None);
    engine.stop().await;
}

support::backends!(each_cleaner_receives_only_its_identifiers);
