//! Administrative commands, tokens, a graceful stop and the audit export.

use super::*;

#[tokio::test]
async fn administrative_commands_steer_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let id = submitted_id(&run(dir, &["submit", "--subject", "user_id=77"]).await.ok()).to_string();
    let held = run(dir, &["hold", &id, "--reason", "litigation"])
        .await
        .ok();
    assert!(held.stdout.contains("on_hold"), "{held:?}");
    run(dir, &["hold", &id, "--reason", "again"])
        .await
        .expect(1);
    run(dir, &["release", &id]).await.ok();
    let extended = run(
        dir,
        &["extend", &id, "--by", "2 months", "--reason", "complex"],
    )
    .await
    .ok();
    assert!(extended.stdout.contains("deadline"), "{extended:?}");
    // Beyond GDPR's two-month maximum.
    let refused = run(dir, &["extend", &id, "--by", "1 month", "--reason", "more"])
        .await
        .expect(1);
    assert!(refused.stderr.contains("maximum"), "{refused:?}");
    run(dir, &["extend", &id, "--by", "soon", "--reason", "x"])
        .await
        .expect(1);
    let cancelled = run(dir, &["cancel", &id, "--reason", "asked by phone"])
        .await
        .ok();
    assert!(cancelled.stdout.contains("cancelled"), "{cancelled:?}");
    let history = run(dir, &["history", &id, "--json"]).await.ok().json();
    let types: Vec<_> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "Received",
            "HoldPlaced",
            "HoldReleased",
            "DeadlineExtended",
            "Cancelled"
        ]
    );
    assert!(history["events"][1]["actor"]
        .as_str()
        .unwrap()
        .starts_with("cli:"));
    // Nothing after a closed request.
    run(dir, &["expedite", &id]).await.expect(1);
    run(dir, &["reject", &id, "--reason", "x"]).await.expect(1);
}

#[tokio::test]
async fn token_create_prints_a_token_and_its_config_block() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let out = run(
        dir,
        &[
            "token",
            "create",
            "--scope",
            "requests:write",
            "--scope",
            "cleaner:billing",
            "--name",
            "intake",
        ],
    )
    .await
    .ok();
    let token = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("lethe_"))
        .unwrap()
        .to_owned();
    let block = &out.stdout[out.stdout.find("[[tokens]]").unwrap()..];
    let config = lethe_engine::config::Config::parse(block).unwrap();
    assert_eq!(config.tokens[0].name, "intake");
    assert_eq!(
        config.tokens[0].sha256,
        lethe_engine::http::auth::token_hash(&token)
    );
    assert_eq!(
        config.tokens[0].scopes,
        ["requests:write", "cleaner:billing"]
    );
    run(dir, &["token", "create", "--scope", "everything"])
        .await
        .expect(1);
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["serve", "--listen", "0.0.0.0:0"])
        .await
        .expect(1);
    assert!(out.stderr.contains("auth is off"), "{out:?}");
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_and_loses_nothing() {
    const LINES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let pid = server.child.id().unwrap();
    // A client streaming a bulk body slowly: 30 lines every 50 ms.
    let chunks = futures::stream::iter(0..LINES / 30).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text: String = (0..30)
            .map(|i| {
                format!(
                    "{{\"subject\":{{\"user_id\":\"term-{}\"}}}}\n",
                    chunk * 30 + i
                )
            })
            .collect();
        Ok::<_, std::io::Error>(text)
    });
    let response = http_client()
        .post(server.url("/v1/requests:bulk"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The answer has begun while the body is still streaming: now ask the server to stop.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let text = timeout(COMMAND_DEADLINE, response.text())
        .await
        .unwrap()
        .unwrap();
    let results: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        results.len(),
        LINES,
        "every line of the request in flight was answered"
    );
    assert!(results.iter().all(|r| r["created"] == true), "{text}");
    let mut server = server;
    let status = timeout(COMMAND_DEADLINE, server.child.wait())
        .await
        .expect("the server exits after SIGTERM")
        .unwrap();
    assert!(
        status.success(),
        "a clean exit: {status:?}\n{}",
        server.log()
    );
    assert!(server.log().contains("shutting down"), "{}", server.log());
    let verify = run(dir.path(), &["verify"]).await.ok();
    assert!(
        verify.stdout.contains(&format!("ok: {LINES} requests")),
        "{verify:?}"
    );
}

#[tokio::test]
async fn audit_export_streams_requests_with_their_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut ids = Vec::new();
    for n in 0..3 {
        let user = format!("user_id=export-{n}");
        ids.push(submitted_id(&run(dir, &["submit", "--subject", &user]).await.ok()).to_string());
    }
    run(dir, &["hold", &ids[1], "--reason", "audit"]).await.ok();
    let today = Utc::now().date_naive().to_string();
    let jsonl = run(dir, &["audit", "export", "--from", &today, "--to", &today])
        .await
        .ok();
    let lines: Vec<Value> = jsonl
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{jsonl:?}");
    assert!(lines.iter().all(|l| l["verified"] == true));
    let held = lines.iter().find(|l| l["request_id"] == ids[1]).unwrap();
    let types: Vec<_> = held["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Received", "HoldPlaced"]);
    assert!(
        jsonl.stderr.contains("exported 3 requests; 0 failed"),
        "{jsonl:?}"
    );

    let csv = run(
        dir,
        &[
            "audit", "export", "--from", &today, "--to", &today, "--format", "csv",
        ],
    )
    .await
    .ok();
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert!(rows[0].starts_with("request_id,verified,chain_error,position"));
    assert_eq!(rows.len(), 1 + 4, "a header and one row per event");
    // A range before anything was received is empty.
    let empty = run(
        dir,
        &[
            "audit",
            "export",
            "--from",
            "2001-01-01",
            "--to",
            "2001-12-31",
        ],
    )
    .await
    .ok();
    assert!(empty.stdout.is_empty());
    run(dir, &["audit", "export", "--from", "soon", "--to", &today])
        .await
        .expect(1);
    run(
        dir,
        &[
            "audit", "export", "--from", &today, "--to", &today, "--format", "xml",
        ],
    )
    .await
    .expect(2);
}
