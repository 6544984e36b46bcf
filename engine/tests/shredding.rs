//! Crypto-shredding, black box: `lethe serve` (a child process, with its logs captured at
//! debug level) runs a request whose subject carries a planted unique identifier through the
//! whole lifecycle to `Shredded`. The cleaner really received the identifier; afterwards the
//! history still verifies and shows the subject as shredded, an export verifies from the file
//! alone, and the identifier appears nowhere: not in a full dump of the database, not in the
//! export, not in the logs. Also: a second submission for
//! a subject with an open request returns that request.

mod support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::config::{Cleaner, TestConfig};
use support::fake_service::FakeService;
use support::TestStore;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;

struct Serve {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn serve(dir: &std::path::Path, database_url: &str, config: &str) -> Serve {
    std::fs::write(dir.join("lethe.toml"), config).unwrap();
    std::fs::write(dir.join("master.key"), "11".repeat(32)).unwrap();
    let mut child = support::binary::lethe(dir)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
        ])
        .env("RUST_LOG", "debug")
        .env("LETHE_MASTER_KEY_FILE", dir.join("master.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let base = loop {
        assert!(
            Instant::now() < deadline,
            "serve did not start:\n{}",
            log.lock().unwrap()
        );
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|| panic!("serve exited:\n{}", log.lock().unwrap()));
        log.lock().unwrap().push_str(&line);
        log.lock().unwrap().push('\n');
        if line.contains("lethe is serving") {
            let address = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("listen="))
                .unwrap()
                .to_owned();
            break format!("http://{address}");
        }
    };
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    Serve { child, base, log }
}

async fn a_planted_identifier_disappears_after_shredding(store: TestStore) {
    let cleaner = FakeService::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new()
        .grace("1s")
        .no_reminders()
        .retention("2s")
        .poll_interval("50ms")
        .cleaner(Cleaner::http("billing", &cleaner.url))
        .toml();
    let server = serve(dir.path(), &store.database_url(), &config).await;
    let planted = format!("planted-{}", uuid::Uuid::new_v4().simple());
    let client = reqwest::Client::new();
    let submitted: serde_json::Value = client
        .post(format!("{}/v1/requests", server.base))
        .json(&serde_json::json!({"subject": {"email": format!("{planted}@example.com"), "user_id": planted}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_str().unwrap().to_owned();

    // Before shredding the auditor sees the identifiers; a second submission for the same
    // subject (one identifier is enough, case does not matter) returns the open request.
    let history: serde_json::Value = client
        .get(format!("{}/v1/requests/{id}/history", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["subject"]["identifiers"]["user_id"], planted);
    let again = client
        .post(format!("{}/v1/requests", server.base))
        .json(&serde_json::json!({"subject": {"email": format!("{}@EXAMPLE.com", planted.to_uppercase())}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], id);

    let history = wait_shredded(&client, &server, &id).await;
    assert_eq!(history["verified"], true, "the history still verifies");
    assert_eq!(history["subject"], "shredded");
    assert!(
        cleaner
            .calls()
            .iter()
            .any(|c| c.body["subject"]["user_id"] == planted.as_str()),
        "the cleaner was told the identifier (so it really existed)"
    );
    // A new submission for the same subject is a new request now that the first is closed.
    let fresh: serde_json::Value = client
        .post(format!("{}/v1/requests", server.base))
        .json(&serde_json::json!({"subject": {"user_id": "someone-else"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(fresh["id"], id);
    let log = server.log.lock().unwrap().clone();
    drop(server);

    export_verifies_alone(dir.path(), &store, &id, &planted).await;

    let dump = support::dump::dump(&store).await;
    assert!(
        dump.contains(&id),
        "the dump holds the request (so it is the right dump)"
    );
    assert!(
        !dump.contains(&planted),
        "the planted identifier survives in the database dump"
    );
    assert!(!dump.to_lowercase().contains(&planted.to_lowercase()));
    assert!(
        log.contains(&id),
        "the logs mention the request (so they were captured)"
    );
    assert!(
        !log.contains(&planted),
        "the planted identifier appears in the logs"
    );
}

/// The export still carries every event the chain covers: it verifies from the file alone, and
/// holds the request but not the identifier.
async fn export_verifies_alone(dir: &std::path::Path, store: &TestStore, id: &str, planted: &str) {
    let today = chrono::Utc::now().date_naive().to_string();
    let export = support::binary::lethe(dir)
        .args(["audit", "export", "--from", &today, "--to", &today])
        .args(["--database-url", &store.database_url()])
        .output()
        .await
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    let jsonl = String::from_utf8(export.stdout).unwrap();
    assert!(
        jsonl.contains("\"Shredded\"") && jsonl.contains(id),
        "{jsonl}"
    );
    assert!(
        !jsonl.contains(planted),
        "the planted identifier is in the export"
    );
    let copy = tempfile::tempdir().unwrap();
    std::fs::write(copy.path().join("export.jsonl"), &jsonl).unwrap();
    let verified = support::binary::lethe(copy.path())
        .args(["audit", "verify-export", "export.jsonl"])
        .output()
        .await
        .unwrap();
    assert!(verified.status.success(), "{verified:?}");
}

/// The request's history once it records `Shredded` (at most 30 s).
async fn wait_shredded(client: &reqwest::Client, server: &Serve, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history: serde_json::Value = client
            .get(format!("{}/v1/requests/{id}/history", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let types: Vec<&str> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        if types.contains(&"Shredded") {
            break history;
        }
        assert!(
            Instant::now() < deadline,
            "not shredded in time: {types:?}\n{}",
            server.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

support::backends!(a_planted_identifier_disappears_after_shredding);
