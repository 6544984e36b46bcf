//! The README tour on the embedded default, and `submit` with jurisdictions and external ids.

use super::*;

/// The README's tour on the embedded default: serve, submit over HTTP with no content type,
/// stop the server, then read the same database with `history`, `show` and `verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_tour_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(support::binary::lethe_without_key(dir.path()), &[]).await;
    let client = http_client();
    let response = client
        .post(server.url("/v1/requests"))
        .body(r#"{"subject":{"user_id":"42"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", server.log());
    let submitted: Value = response.json().await.unwrap();
    let id: RequestId = submitted["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(submitted["status"], "pending");

    let shown: Value = client
        .get(server.url(&format!("/v1/requests/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "pending");
    let ready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    server.kill().await;

    // The data is where the README says (`./lethe-data/lethe.db`), and the development key was created beside it
    // and is the one the cancel token comes from.
    let data = dir.path().join("lethe-data");
    assert!(data.join("lethe.db").is_file());
    let key = MasterKey::read(&data.join("master.key")).unwrap();
    assert_eq!(submitted["cancel_token"], key.cancel_token(id));

    let id_text = id.to_string();
    let history = run_without_key(dir.path(), &["history", &id_text])
        .await
        .ok();
    assert!(history.stdout.contains("Received"), "{history:?}");
    assert!(history.stdout.contains("verified"), "{history:?}");
    assert!(history.stdout.contains(&id_text), "{history:?}");

    let history = run_without_key(dir.path(), &["history", &id_text, "--json"])
        .await
        .ok();
    let json = history.json();
    assert_eq!(json["events"][0]["type"], "Received", "{history:?}");
    // The log holds the subject sealed; the auditor's view opens it while the key exists.
    assert!(
        json["events"][0]["data"]["subject"]["$sealed"].is_string(),
        "{history:?}"
    );
    assert_eq!(json["subject"]["identifiers"]["user_id"], "42");
    assert_eq!(json["events"].as_array().unwrap().len(), 1);
    assert_eq!(json["verified"], true);

    let show = run_without_key(dir.path(), &["show", &id_text]).await.ok();
    assert!(show.stdout.contains("pending"), "{show:?}");
    assert!(show.stdout.contains(&id_text), "{show:?}");

    let verify = run_without_key(dir.path(), &["verify"]).await.ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");
    let verify = run_without_key(dir.path(), &["verify", &id_text])
        .await
        .ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");

    // The same database serves again, with the request still there.
    let server = Server::spawn(support::binary::lethe_without_key(dir.path()), &[]).await;
    let again = client
        .get(server.url(&format!("/v1/requests/{id}/history")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["verified"], true);
    assert_eq!(again["events"][0]["hash"], json["events"][0]["hash"]);
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_with_a_jurisdiction_and_an_external_id() {
    let dir = tempfile::tempdir().unwrap();
    let submit = run(
        dir.path(),
        &[
            "submit",
            "--subject",
            "user_id=7",
            "--subject",
            "email=x@example.com",
            "--jurisdiction",
            "ccpa",
            "--json",
        ],
    )
    .await
    .ok();
    let submitted = submit.json();
    let id = submitted["id"].as_str().unwrap().to_owned();
    assert_eq!(submitted["status"], "pending");

    let show = run(dir.path(), &["show", &id, "--json"]).await.ok();
    let shown = show.json();
    assert_eq!(shown["jurisdiction"], "ccpa", "{show:?}");
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["due_at"], submitted["due_at"]);
    let history = run(dir.path(), &["history", &id, "--json"]).await.ok();
    assert_eq!(
        history.json()["subject"]["identifiers"],
        serde_json::json!({"user_id": "7", "email": "x@example.com"})
    );

    let first = run(
        dir.path(),
        &["submit", "--subject", "user_id=8", "--external-id", "E1"],
    )
    .await
    .ok();
    let again = run(
        dir.path(),
        &["submit", "--subject", "user_id=8", "--external-id", "E1"],
    )
    .await
    .ok();
    assert_eq!(submitted_id(&again), submitted_id(&first));
    assert!(
        first.stdout.lines().next().unwrap().ends_with(" submitted"),
        "{first:?}"
    );
    assert!(
        again
            .stdout
            .lines()
            .next()
            .unwrap()
            .ends_with(" already submitted"),
        "{again:?}"
    );
    assert_ne!(submitted_id(&first).to_string(), id);

    // Two requests in the log, not three.
    let path = dir.path().join("lethe-data/lethe.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let events = lethe_engine::store::EventStore::read_all(&store, Checkpoint::START, 100)
        .await
        .unwrap();
    let received = events.iter().filter(|e| e.event_type == "Received").count();
    assert_eq!(received, 2, "{events:?}");

    // An unknown jurisdiction is refused, naming it.
    let refused = run(
        dir.path(),
        &["submit", "--subject", "user_id=7", "--jurisdiction", "lgpd"],
    )
    .await
    .expect(1);
    assert!(refused.stderr.contains("jurisdiction"), "{refused:?}");
}
