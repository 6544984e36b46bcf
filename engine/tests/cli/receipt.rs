//! `lethe receipt verify FILE`: a receipt fetched from a running `lethe serve` verifies from
//! the file alone, against the saved public keys or the configured master key; an altered one
//! fails (exit 1).

use super::*;

#[tokio::test]
async fn a_served_receipt_verifies_from_the_file_and_an_altered_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lethe.toml"),
        "[engine]\npoll_interval = \"50ms\"\n\n[[cleaners]]\nname = \"archive\"\nkind = \"manual\"\n",
    )
    .unwrap();
    let server = Server::start(dir.path()).await;
    let client = http_client();
    let submitted: Value = client
        .post(server.url("/v1/requests"))
        .json(&serde_json::json!({"subject": {"user_id": "51"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_str().unwrap().to_owned();
    for (path, body) in [
        (format!("/v1/requests/{id}/expedite"), serde_json::json!({})),
        (
            format!("/v1/requests/{id}/cleaners/archive/result"),
            serde_json::json!({"attempt": 1, "outcome": "succeeded"}),
        ),
    ] {
        let answer = client
            .post(server.url(&path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            200,
            "{path}: {}",
            answer.text().await.unwrap()
        );
    }
    let receipt = client
        .get(server.url(&format!("/v1/requests/{id}/receipt")))
        .send()
        .await
        .unwrap();
    assert_eq!(receipt.status(), 200);
    let bytes = receipt.bytes().await.unwrap();
    let keys = client
        .get(server.url("/v1/receipt-keys"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    server.kill().await;
    std::fs::write(dir.path().join("receipt.json"), &bytes).unwrap();
    std::fs::write(dir.path().join("keys.json"), &keys).unwrap();

    let checked = run(
        dir.path(),
        &["receipt", "verify", "receipt.json", "--keys", "keys.json"],
    )
    .await
    .ok();
    assert!(
        checked
            .stdout
            .starts_with(&format!("VERIFIED: receipt of request {id}")),
        "{checked:?}"
    );
    assert!(checked.stdout.contains("deadline"), "{checked:?}");
    // Without --keys: the receipt key of the configured master key, still no database.
    std::fs::remove_dir_all(dir.path().join("lethe-data")).ok();
    let by_master = run(dir.path(), &["receipt", "verify", "receipt.json"])
        .await
        .ok();
    assert!(by_master.stdout.starts_with("VERIFIED"), "{by_master:?}");

    let altered =
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .replacen("\"succeeded\"", "\"skipped\"", 1);
    std::fs::write(dir.path().join("altered.json"), altered).unwrap();
    let refused = run(
        dir.path(),
        &["receipt", "verify", "altered.json", "--keys", "keys.json"],
    )
    .await
    .expect(1);
    assert!(
        refused
            .stdout
            .contains("FAILED: altered.json: the signature does not match"),
        "{refused:?}"
    );
}
