//! Signed receipts: a completed request's receipt over HTTP says what its log proves and
//! verifies under the published keys; changing any one byte of it, or checking it against
//! another key, fails; a request not yet completed has none (409).

use super::*;
use lethe_engine::app::receipt::{verify, ReceiptKeysView};
use lethe_engine::store::master_key::MasterKey;
use serde_json::{json, Value};
use support::fake_service::{FakeService, SECRET};

async fn raw_get(engine: &Engine, path: &str) -> (u16, Vec<u8>) {
    let answer = engine.client.get(engine.url(path)).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.bytes().await.unwrap().to_vec())
}

async fn a_receipt_proves_the_completion_and_no_byte_of_it_can_change(store: TestStore) {
    let config = config("1s")
        .cleaner(Cleaner::manual("archive"))
        .cleaner(Cleaner::manual("crm"))
        .store("customers", &["user_id"], &["crm", "archive"]);
    let engine = Engine::start(store, config).await;
    let id = engine.submit("41", "gdpr").await;
    let (status, body) = raw_get(&engine, &format!("/v1/requests/{id}/receipt")).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    engine
        .wait_for(id, RequestStatus::Due, Duration::from_secs(10))
        .await;
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/cleaners/archive/result"),
            json!({"attempt": 1, "outcome": "succeeded", "deleted": {"boxes": 3}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/cleaners/crm/skip"),
            json!({"reason": "no CRM record"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, bytes) = raw_get(&engine, &format!("/v1/requests/{id}/receipt")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let (status, keys) = raw_get(&engine, "/v1/receipt-keys").await;
    assert_eq!(status, 200);
    let keys: ReceiptKeysView = serde_json::from_slice(&keys).unwrap();
    let receipt = verify(&bytes, &keys).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(receipt.key_id, keys.keys[0].key_id);
    let loaded = engine.load(id).await;
    let completed = loaded.events.last().unwrap();
    assert_eq!(completed.event_type, "Completed");
    let body = serde_json::to_value(&receipt.receipt).unwrap();
    let cleaners = &body["cleaners"];
    assert_eq!(
        (
            &body["request_id"],
            &body["jurisdiction"],
            &body["deadline_met"]
        ),
        (&json!(id.to_string()), &json!("gdpr"), &json!(true))
    );
    assert_eq!(body["deadline"], json!(loaded.request.deadline.to_string()));
    assert_eq!(
        (
            &cleaners[0]["name"],
            &cleaners[0]["outcome"],
            &cleaners[0]["deleted"]
        ),
        (&json!("archive"), &json!("succeeded"), &json!({"boxes": 3}))
    );
    assert_eq!(
        (&cleaners[1]["name"], &cleaners[1]["outcome"]),
        (&json!("crm"), &json!("skipped"))
    );
    assert_eq!(
        body["stores"],
        json!([{"store": "customers", "succeeded": ["archive"], "skipped": ["crm"]}])
    );
    assert_eq!(
        body["completed_event"],
        json!({"version": completed.version, "hash": completed.hash})
    );
    // The same receipt every time (Ed25519 signatures are deterministic).
    let (_, again) = raw_get(&engine, &format!("/v1/requests/{id}/receipt")).await;
    assert_eq!(again, bytes);

    // Every byte, changed in turn (and a newline dropped or added), fails.
    for at in 0..bytes.len() {
        for flip in [0x01_u8, 0x20, 0x80] {
            let mut altered = bytes.clone();
            altered[at] ^= flip;
            assert!(
                verify(&altered, &keys).is_err(),
                "byte {at} ^ {flip:#x} still verifies: {}",
                String::from_utf8_lossy(&altered)
            );
        }
    }
    assert!(
        verify(&bytes[..bytes.len() - 1], &keys).is_ok(),
        "without its newline"
    );
    assert!(verify(&[bytes.as_slice(), b"\n"].concat(), &keys).is_err());
    let other = lethe_engine::app::receipt::public_keys(&MasterKey::from_bytes([9; 32]));
    assert!(verify(&bytes, &other).is_err(), "another key's");
    let value: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["key_id"], json!(receipt.key_id));
    engine.stop().await;
}

async fn the_notifier_is_told_of_the_completion_with_its_receipt(store: TestStore) {
    // The first call fails: the completion is offered again, with the same Idempotency-Key.
    let notifier = FakeService::start(&[503]).await;
    let config = config("1s")
        .notifier(&notifier.url, Some(SECRET), None)
        .cleaner(Cleaner::manual("archive"));
    let engine = Engine::start(store, config).await;
    let id = engine.submit("42", "gdpr").await;
    engine
        .wait_for(id, RequestStatus::Due, Duration::from_secs(10))
        .await;
    let (status, body) = engine
        .post(
            &format!("/v1/requests/{id}/cleaners/archive/result"),
            json!({"attempt": 1, "outcome": "succeeded"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let completions = || {
        notifier
            .calls()
            .into_iter()
            .filter(|c| c.body["type"] == "completed")
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(15),
        "the notifier took the completion",
        || completions().len() >= 2,
    )
    .await;
    let calls = completions();
    let (_, keys) = raw_get(&engine, "/v1/receipt-keys").await;
    let keys: ReceiptKeysView = serde_json::from_slice(&keys).unwrap();
    for call in &calls {
        assert_eq!(call.idempotency_key, format!("{id}:completed"));
        assert!(call.signature_ok);
        assert_eq!(call.body["request_id"], json!(id.to_string()));
        let text = call.body["receipt"].as_str().unwrap();
        let receipt = verify(text.as_bytes(), &keys).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(receipt.receipt.request_id, id);
    }
    let (_, served) = raw_get(&engine, &format!("/v1/requests/{id}/receipt")).await;
    assert_eq!(
        calls[1].body["receipt"].as_str().unwrap().as_bytes(),
        served
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine
        .jobs(id)
        .await
        .iter()
        .any(|j| j.kind == lethe_engine::workflow::JobKind::Completion)
    {
        assert!(Instant::now() < deadline, "the completion job stays");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(completions().len(), 2, "accepted once, not offered again");
    engine.stop().await;
}

support::backends!(
    a_receipt_proves_the_completion_and_no_byte_of_it_can_change,
    the_notifier_is_told_of_the_completion_with_its_receipt,
);
