//! The `lethe` binary, black-box: each test runs it in a temp dir of its own as working
//! directory (so the default `sqlite://./lethe-data/lethe.db` lands there) with the `LETHE_*`
//! environment cleared. Covered: the README tour (serve, submit over HTTP, then history, show
//! and verify on the embedded default), `submit` with jurisdictions and external ids, tamper
//! detection by `verify` and `history` on both backends, idempotent `migrate`, config and
//! usage errors with their exit codes, and that `lethe.toml`, the environment overrides and
//! the master key file are honoured. Every wait is bounded, and a spawned server is killed
//! even when an assertion fails.

mod support;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use lethe_domain::RequestId;
use lethe_domain::RequestStatus;
use lethe_engine::read_models::RequestFilter;
use lethe_engine::store::master_key::MasterKey;
use lethe_engine::store::{Checkpoint, SqliteStore};
use lethe_projections::requests::{CleanerRow, RequestRow};
use serde_json::Value;
use support::TestStore;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// How long one `lethe` command may take (a cold Postgres connection included).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// How long `lethe serve` may take to say where it listens.
const SERVE_DEADLINE: Duration = Duration::from_secs(30);

/// `lethe` with `dir` as working directory, a clean environment and the test master key.
fn lethe(dir: &Path) -> Command {
    support::binary::lethe(dir)
}

/// What one finished command did.
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lethe {:?} exited with {:?}\n--- stdout\n{}--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self:?}");
        self
    }

    fn ok(self) -> Self {
        self.expect(0)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `lethe ARGS` in `dir` (with `env` set) to completion.
async fn run_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    run_command(lethe(dir), args, env).await
}

/// Runs `lethe ARGS` in `dir` with no master key configured.
async fn run_without_key(dir: &Path, args: &[&str]) -> Run {
    run_command(support::binary::lethe_without_key(dir), args, &[]).await
}

async fn run_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Run {
    command.args(args).envs(env.iter().copied());
    let output = timeout(COMMAND_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("lethe {args:?} did not finish within {COMMAND_DEADLINE:?}"))
        .unwrap();
    Run {
        args: args.iter().map(ToString::to_string).collect(),
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

async fn run(dir: &Path, args: &[&str]) -> Run {
    run_with_env(dir, args, &[]).await
}

/// The id `lethe submit` printed first on its first line ("ID submitted").
fn submitted_id(run: &Run) -> RequestId {
    run.stdout
        .split_whitespace()
        .next()
        .and_then(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no request id first: {run:?}"))
}

fn time(value: &Value) -> DateTime<Utc> {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value} is no time: {e}"))
}

/// `lethe serve`, killed when dropped, whatever happened in the test.
struct Server {
    child: Child,
    address: SocketAddr,
    /// Everything the server wrote to stderr, for failure messages.
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `lethe serve --listen 127.0.0.1:0` in `dir` and waits until it says where it
    /// listens.
    async fn start(dir: &Path) -> Self {
        Self::spawn(lethe(dir), &[]).await
    }

    /// Starts `lethe serve --listen 127.0.0.1:0 ARGS` from `command`.
    async fn spawn(mut command: Command, args: &[&str]) -> Self {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let mut server = Self {
            child,
            address: SocketAddr::from(([0, 0, 0, 0], 0)),
            log: log.clone(),
        };
        let listening = timeout(SERVE_DEADLINE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if line.contains("lethe is serving") {
                    return Some(line);
                }
            }
            None
        })
        .await;
        let line = match listening {
            Ok(Some(line)) => line,
            Ok(None) => panic!("lethe serve exited before serving:\n{}", server.log()),
            Err(_) => panic!(
                "lethe serve did not serve within {SERVE_DEADLINE:?}:\n{}",
                server.log()
            ),
        };
        server.address = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("listen="))
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no listen=ADDRESS in {line:?}"));
        // Keep reading so the server never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kills the server and waits (bounded) until it is gone.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        timeout(COMMAND_DEADLINE, self.child.wait())
            .await
            .expect("the killed server exits")
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

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

/// Changes one byte of the second request's stored payload behind Lethe's back: `verify` names
/// that request and the event's position, the first request still verifies, and `history`
/// shows the break.
async fn verify_and_history_detect_tampering(t: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    let submit = |user: &'static str| {
        let (dir, url) = (dir.path().to_owned(), url.clone());
        async move {
            let output = run(
                &dir,
                &[
                    "submit",
                    "--database-url",
                    &url,
                    "--subject",
                    user,
                    "--source",
                    "original",
                ],
            )
            .await
            .ok();
            submitted_id(&output)
        }
    };
    let first = submit("user_id=1").await;
    let second = submit("user_id=2").await;
    let (first_text, second_text) = (first.to_string(), second.to_string());
    let verify = run(dir.path(), &["verify", "--database-url", &url])
        .await
        .ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");

    // Both stores keep the payload as JSON text (ADR 12).
    t.execute(&format!(
        "UPDATE events SET payload = replace(payload, 'original', 'tamperex') \
         WHERE stream_id = '{second}'"
    ))
    .await;
    let stored = t.store().read_stream(second, 0).await.unwrap();
    assert_ne!(
        stored[0].payload["source"], "original",
        "the tampering took effect"
    );
    let position = stored[0].position;

    let verify = run(dir.path(), &["verify", "--database-url", &url])
        .await
        .expect(1);
    let failure = verify
        .stdout
        .lines()
        .find(|line| line.contains(&second_text))
        .unwrap_or_else(|| panic!("the tampered request is not named: {verify:?}"));
    assert!(
        failure.contains(&format!("position {position}")),
        "{verify:?}"
    );
    assert!(
        !verify.stdout.contains(&first_text),
        "only the tampered request fails: {verify:?}"
    );

    let verify = run(dir.path(), &["verify", &first_text, "--database-url", &url])
        .await
        .ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");
    let verify = run(
        dir.path(),
        &["verify", &second_text, "--database-url", &url],
    )
    .await
    .expect(1);
    assert!(
        verify.stdout.contains(&format!("position {position}")),
        "{verify:?}"
    );

    let history = run(
        dir.path(),
        &["history", &second_text, "--database-url", &url],
    )
    .await
    .expect(1);
    assert!(history.stdout.contains("BROKEN"), "{history:?}");
    let history = run(
        dir.path(),
        &["history", &second_text, "--json", "--database-url", &url],
    )
    .await
    .expect(1);
    let json = history.json();
    assert_eq!(json["verified"], false);
    assert_eq!(json["chain_error"]["position"], position);
    run(
        dir.path(),
        &["history", &first_text, "--database-url", &url],
    )
    .await
    .ok();
}

/// `migrate` on a database that has never seen Lethe, twice: both succeed, and each
/// migration file was applied exactly once.
async fn migrate_is_idempotent(t: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    for _ in 0..2 {
        let migrate = run(dir.path(), &["migrate", "--database-url", &url])
            .await
            .ok();
        assert!(migrate.stdout.contains("up to date"), "{migrate:?}");
    }
    let mut files: Vec<i64> = std::fs::read_dir(t.migrations_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| {
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
        .collect();
    files.sort_unstable();
    assert!(!files.is_empty());
    let applied = t
        .fetch_integers("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .await;
    assert_eq!(applied, files);
    let all = t
        .fetch_integers("SELECT COUNT(*) FROM _sqlx_migrations")
        .await;
    assert_eq!(all, [i64::try_from(files.len()).unwrap()]);
    // And the schema is usable.
    run(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--database-url", &url],
    )
    .await
    .ok();
}

/// Upgrading a database written under the migrations before the log was rewritten (ADR 11),
/// through every later one, keeps every event and its position, and a later append comes
/// after the highest position ever given, even one whose event is gone. A read model row
/// written before the upgrade (as `jsonb` on Postgres, before ADR 12) reads back the same.
async fn an_upgrade_keeps_the_log(t: TestStore) {
    let earlier = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(t.migrations_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let rewrite = files
        .iter()
        .position(|path| path.to_string_lossy().ends_with("_events_fewer_checks.sql"))
        .expect("the migration that rewrites the log");
    files.truncate(rewrite);
    for file in &files {
        std::fs::copy(file, earlier.path().join(file.file_name().unwrap())).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(earlier.path()).await.unwrap();
    match &t {
        TestStore::Postgres { store, .. } => migrator.run(store.pool()).await.unwrap(),
        TestStore::Sqlite { store, .. } => migrator.run(store.writer()).await.unwrap(),
    }
    let row = |version: u32, event_id: &str| {
        format!(
            "('0192e4a0-0000-7000-8000-000000000001', {version}, 'Received', 1, '{{}}', \
             '{event_id}', '0192e4a0-0000-7000-8000-0000000000cc', 'test', \
             '2026-12-01T00:00:00Z', 'p{version}', 'h{version}')"
        )
    };
    t.execute(&format!(
        "INSERT INTO streams (stream_id, version, last_hash) \
         VALUES ('0192e4a0-0000-7000-8000-000000000001', 3, 'h3'); \
         INSERT INTO events (stream_id, version, event_type, schema_version, payload, event_id, \
         correlation_id, actor, recorded_at, prev_hash, hash) VALUES {}, {}, {}; \
         DELETE FROM events WHERE version = 3;",
        row(1, "0192e4a0-0000-7000-8000-0000000000e1"),
        row(2, "0192e4a0-0000-7000-8000-0000000000e2"),
        row(3, "0192e4a0-0000-7000-8000-0000000000e3"),
    ))
    .await;
    let before = t
        .fetch_integers("SELECT position FROM events ORDER BY position")
        .await;
    assert_eq!(before.len(), 2);
    let view = RequestRow {
        id: RequestId::from_uuid(uuid::Uuid::from_u128(
            0x0192_e4a0_0000_7000_8000_0000_0000_0001,
        )),
        status: RequestStatus::Due,
        jurisdiction: "gdpr".to_owned(),
        source: Some("web \"form\"".to_owned()),
        tags: vec!["b".to_owned(), "a".to_owned()],
        received_at: "2026-12-01T00:00:00Z".parse().unwrap(),
        due_at: "2026-12-15T00:00:00Z".parse().unwrap(),
        deadline: chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(),
        on_hold: false,
        became_due_at: Some("2026-12-15T00:00:01Z".parse().unwrap()),
        closed_at: None,
        cleaners: vec![CleanerRow {
            name: "crm".to_owned(),
            status: "pending".to_owned(),
            attempts: 2,
            max_attempts: 8,
            last_error: Some("503 from crm".to_owned()),
            started_at: "2026-12-15T00:00:01Z".parse().unwrap(),
            finished_at: None,
        }],
        last_error: Some("503 from crm".to_owned()),
        shredded: false,
    };
    t.execute(&format!(
        "INSERT INTO request_view (request_id, status, jurisdiction, received_at, deadline, \
         closed_at, row_data) VALUES ('0192e4a0-0000-7000-8000-000000000001', 'due', 'gdpr', \
         '2026-12-01T00:00:00Z', '2027-01-01', NULL, '{}')",
        serde_json::to_string(&view).unwrap().replace('\'', "''")
    ))
    .await;

    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    let migrate = run(dir.path(), &["migrate", "--database-url", &url])
        .await
        .ok();
    assert!(migrate.stdout.contains("up to date"), "{migrate:?}");
    let kept = t
        .fetch_integers(
            "SELECT position FROM events \
             WHERE stream_id = '0192e4a0-0000-7000-8000-000000000001' ORDER BY position",
        )
        .await;
    assert_eq!(kept, before, "every event keeps its position");
    let versions = t
        .fetch_integers(
            "SELECT version FROM events \
             WHERE stream_id = '0192e4a0-0000-7000-8000-000000000001' ORDER BY position",
        )
        .await;
    assert_eq!(versions, [1, 2]);
    let upgraded = t
        .database()
        .read_models
        .list_requests(&RequestFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(upgraded, [view], "the read model's row after the upgrade");

    run(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--database-url", &url],
    )
    .await
    .ok();
    let after = t
        .fetch_integers(
            "SELECT position FROM events \
             WHERE stream_id <> '0192e4a0-0000-7000-8000-000000000001' ORDER BY position",
        )
        .await;
    assert_eq!(after.len(), 1, "the submission's Received");
    assert!(
        after[0] > before[1] + 1,
        "a new event comes after every position given before the upgrade: {after:?} after {before:?}"
    );
}

/// On Postgres the log is read in transaction order, which hides events whose transaction
/// committed after one still open elsewhere; `verify` must not take that for removed events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_not_fooled_by_a_transaction_left_open() {
    let t = support::postgres().await;
    let TestStore::Postgres { store, .. } = &t else {
        unreachable!("support::postgres gives a Postgres store")
    };
    let mut open = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    run(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--database-url", &url],
    )
    .await
    .ok();
    let verify = run(dir.path(), &["verify", "--database-url", &url]).await;
    open.rollback().await.unwrap();
    let verify = verify.ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");
}

fn write_config(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn a_bad_duration_in_lethe_toml_fails_fast_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "lethe.toml",
        "[policy]\ngrace_period = \"soon\"\n",
    );
    let migrate = run(dir.path(), &["migrate"]).await.expect(1);
    assert!(migrate.stderr.contains("grace_period"), "{migrate:?}");
    assert!(migrate.stderr.contains("lethe.toml"), "{migrate:?}");
    assert!(
        !dir.path().join("lethe-data").exists(),
        "no database before the config is good"
    );
    // Every command reads the config first.
    let submit = run(dir.path(), &["submit", "--subject", "user_id=1"])
        .await
        .expect(1);
    assert!(submit.stderr.contains("grace_period"), "{submit:?}");
}

#[tokio::test]
async fn an_unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "lethe.toml",
        "[policy]\ngrase_period = \"1d\"\n",
    );
    let migrate = run(dir.path(), &["migrate"]).await.expect(1);
    assert!(migrate.stderr.contains("grase_period"), "{migrate:?}");
}

#[tokio::test]
async fn a_reminder_after_the_grace_period_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "lethe.toml",
        "[policy]\ngrace_period = \"2d\"\nreminders = [\"1d\", \"3d\"]\n",
    );
    let migrate = run(dir.path(), &["migrate"]).await.expect(1);
    assert!(
        migrate.stderr.contains("policy.reminders[1]"),
        "{migrate:?}"
    );
}

#[tokio::test]
async fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = run(dir.path(), &["--config", "missing.toml", "migrate"])
        .await
        .expect(1);
    assert!(migrate.stderr.contains("missing.toml"), "{migrate:?}");
    let migrate = run_with_env(dir.path(), &["migrate"], &[("LETHE_CONFIG", "absent.toml")])
        .await
        .expect(1);
    assert!(migrate.stderr.contains("absent.toml"), "{migrate:?}");
    // Without a file and without asking for one, the defaults apply.
    run(dir.path(), &["migrate"]).await.ok();
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["submit"][..],
        &["submit", "--subject", "42"],
        &["frobnicate"],
        &["show"],
        &[],
    ] {
        let refused = run(dir.path(), args).await.expect(2);
        assert!(!refused.stderr.is_empty(), "{refused:?}");
    }
    let help = run(dir.path(), &["--help"]).await.ok();
    for command in ["serve", "migrate", "submit", "show", "history", "verify"] {
        assert!(help.stdout.contains(command), "{help:?}");
    }
}

#[tokio::test]
async fn unknown_and_malformed_request_ids_fail_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["migrate"]).await.ok();
    for command in ["show", "history", "verify"] {
        let malformed = run(dir.path(), &[command, "not-a-uuid"]).await.expect(1);
        assert!(malformed.stderr.contains("not-a-uuid"), "{malformed:?}");
        let unknown = uuid::Uuid::now_v7().to_string();
        let missing = run(dir.path(), &[command, &unknown]).await.expect(1);
        assert!(missing.stderr.contains("no request"), "{missing:?}");
        assert!(missing.stderr.contains(&unknown), "{missing:?}");
    }
}
#[tokio::test]
async fn reading_before_anything_was_submitted_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    let show = run(dir.path(), &["show", &unknown]).await.expect(1);
    assert!(show.stderr.contains("no request"), "{show:?}");
    let verify = run(dir.path(), &["verify"]).await.ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");
}

/// A config with a two-second grace period is honoured: the request is due two seconds after
/// receipt, and reminded one second before.
#[tokio::test]
async fn a_short_grace_period_from_lethe_toml_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "lethe.toml",
        "[policy]\ngrace_period = \"2s\"\nreminders = [\"1s\"]\n",
    );
    let submit = run(dir.path(), &["submit", "--subject", "user_id=7", "--json"])
        .await
        .ok();
    let id = submit.json()["id"].as_str().unwrap().to_owned();
    let show = run(dir.path(), &["show", &id, "--json"]).await.ok();
    let shown = show.json();
    let due_at = time(&shown["due_at"]);
    assert_eq!(
        due_at - time(&shown["received_at"]),
        TimeDelta::seconds(2),
        "{show:?}"
    );
    let reminders = shown["reminders"].as_array().unwrap();
    assert_eq!(reminders.len(), 1, "{show:?}");
    assert_eq!(time(&reminders[0]["at"]), due_at - TimeDelta::seconds(1));
    assert_eq!(shown["status"], "pending");
}

/// `LETHE_CONFIG` and `LETHE_DATABASE_URL` are honoured, and `--database-url` beats the
/// environment.
#[tokio::test]
async fn the_environment_overrides_the_defaults_and_flags_override_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = elsewhere.path().join("custom.toml");
    std::fs::write(&config, "[policy]\ngrace_period = \"5s\"\nreminders = []\n").unwrap();
    let env_db = elsewhere.path().join("env/lethe.db");
    let env_url = format!("sqlite://{}", env_db.display());
    let env = [
        ("LETHE_CONFIG", config.to_str().unwrap()),
        ("LETHE_DATABASE_URL", env_url.as_str()),
    ];

    let submit = run_with_env(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--json"],
        &env,
    )
    .await
    .ok();
    let submitted = submit.json();
    assert_eq!(
        time(&submitted["due_at"]) - time(&submitted["received_at"]),
        TimeDelta::seconds(5)
    );
    assert!(
        env_db.is_file(),
        "the database named by LETHE_DATABASE_URL was used"
    );
    assert!(
        !dir.path().join("lethe-data/lethe.db").exists(),
        "not the default one"
    );

    let flag_db = elsewhere.path().join("flag/lethe.db");
    let flag_url = format!("sqlite://{}", flag_db.display());
    let id = submitted["id"].as_str().unwrap();
    run_with_env(dir.path(), &["show", id], &env).await.ok();
    run_with_env(dir.path(), &["migrate", "--database-url", &flag_url], &env)
        .await
        .ok();
    run_with_env(dir.path(), &["show", id, "--database-url", &flag_url], &env)
        .await
        .expect(1);
    assert!(flag_db.is_file());
}

/// With `LETHE_MASTER_KEY_FILE` the cancel token comes from that key, and no development key
/// is written; a malformed key file is refused, naming it.
#[tokio::test]
async fn the_master_key_file_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    let bytes = [0x42_u8; 32];
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, format!("{hex}\n")).unwrap();
    let env = [("LETHE_MASTER_KEY_FILE", key_file.to_str().unwrap())];

    let submit = run_with_env(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--json"],
        &env,
    )
    .await
    .ok();
    let submitted = submit.json();
    let id: RequestId = submitted["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        submitted["cancel_token"],
        MasterKey::from_bytes(bytes).cancel_token(id)
    );
    assert!(!dir.path().join("lethe-data/master.key").exists());

    std::fs::write(&key_file, "not a key").unwrap();
    let refused = run_with_env(dir.path(), &["submit", "--subject", "user_id=1"], &env)
        .await
        .expect(1);
    assert!(refused.stderr.contains("master.key"), "{refused:?}");
}

/// Runs each test on a fresh database of each backend.
macro_rules! on_both_backends {
    ($($store:ident => [$($test:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $store {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        super::$test(super::support::$store().await).await;
                    }
                )*
            }
        )*
    };
}

on_both_backends!(
    postgres => [
        verify_and_history_detect_tampering,
        a_different_key_is_refused_and_reads_show_the_subject_sealed,
        keys_rotate_while_serving,
    ],
    sqlite => [
        verify_and_history_detect_tampering,
        a_different_key_is_refused_and_reads_show_the_subject_sealed,
        keys_rotate_while_serving,
    ],
    postgres_unmigrated => [migrate_is_idempotent, an_upgrade_keeps_the_log],
    sqlite_unmigrated => [migrate_is_idempotent, an_upgrade_keeps_the_log],
);

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

fn fingerprint(key_file: &Path) -> String {
    lethe_engine::store::master_key::KeyMaterial::read(key_file)
        .unwrap()
        .fingerprint()
}

/// The finding this guards against: on Postgres the key used to default to
/// `./lethe-data/master.key` in whatever directory `lethe` ran. Now without
/// `LETHE_MASTER_KEY_FILE` every command that needs the key refuses, naming the variable and
/// the flag; `--dev-master-key` opts in, and the same flag in another directory (another
/// development key) is refused naming both fingerprints, while `history` there still shows
/// every event with the subject sealed, and `verify`, `show` and `audit export` need no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_needs_an_explicit_master_key() {
    let t = support::postgres().await;
    let url = t.database_url();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    for args in [
        vec!["submit", "--subject", "user_id=1", "--database-url", &url],
        vec!["serve", "--listen", "127.0.0.1:0", "--database-url", &url],
    ] {
        let refused = run_without_key(here.path(), &args).await.expect(1);
        assert!(
            refused.stderr.contains("LETHE_MASTER_KEY_FILE")
                && refused.stderr.contains("--dev-master-key"),
            "{refused:?}"
        );
    }
    assert!(!here.path().join("lethe-data").exists(), "no key was made");

    let dev = |dir: &Path, args: &[&str]| {
        let mut all = vec!["--dev-master-key", "--database-url", &url];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(ToOwned::to_owned).collect();
        let dir = dir.to_owned();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            run_without_key(&dir, &all).await
        }
    };
    let submitted = dev(here.path(), &["submit", "--subject", "user_id=7", "--json"])
        .await
        .ok();
    let id = submitted.json()["id"].as_str().unwrap().to_owned();
    let here_key = fingerprint(&here.path().join("lethe-data/master.key"));
    dev(here.path(), &["history", &id, "--json"]).await.ok();

    let refused = dev(there.path(), &["submit", "--subject", "user_id=8"])
        .await
        .expect(1);
    let there_key = fingerprint(&there.path().join("lethe-data/master.key"));
    assert_ne!(here_key, there_key);
    assert!(
        refused.stderr.contains(&here_key) && refused.stderr.contains(&there_key),
        "{refused:?}"
    );
    let history = dev(there.path(), &["history", &id, "--json"]).await.ok();
    let json = history.json();
    assert_eq!(json["subject"], "sealed", "{history:?}");
    assert_eq!(json["verified"], true, "{history:?}");
    assert_eq!(json["events"][0]["type"], "Received", "{history:?}");
    assert!(history.stderr.contains(&here_key), "{history:?}");
    let history = run_without_key(there.path(), &["history", &id, "--database-url", &url])
        .await
        .ok();
    assert!(history.stdout.contains("Subject: sealed"), "{history:?}");
    assert!(
        history.stdout.contains("Hash chain: verified"),
        "{history:?}"
    );
    run_without_key(there.path(), &["verify", "--database-url", &url])
        .await
        .ok();
    // Commands on a request's state need no key; a result typed by hand does (its detail is
    // scrubbed of the subject's identifiers, so the subject must open).
    run_without_key(
        there.path(),
        &["hold", &id, "--reason", "audit", "--database-url", &url],
    )
    .await
    .ok();
    let refused = run_without_key(
        there.path(),
        &["confirm", &id, "archive", "--database-url", &url],
    )
    .await
    .expect(1);
    assert!(
        refused.stderr.contains("LETHE_MASTER_KEY_FILE"),
        "{refused:?}"
    );
    run_without_key(there.path(), &["show", &id, "--database-url", &url])
        .await
        .ok();
    let today = Utc::now().date_naive().to_string();
    let export = run_without_key(
        there.path(),
        &[
            "audit",
            "export",
            "--from",
            &today,
            "--to",
            &today,
            "--database-url",
            &url,
        ],
    )
    .await
    .ok();
    assert!(export.stdout.contains(&id), "{export:?}");
}

/// A key other than the one the database records is refused by `submit` and `serve`, naming
/// both fingerprints; `history` with it still shows every event and the verdict, with the
/// subject sealed (and a warning naming both fingerprints); with the right key it opens.
async fn a_different_key_is_refused_and_reads_show_the_subject_sealed(t: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    let right = support::binary::key_file(dir.path());
    let wrong = support::binary::write_key(dir.path(), "wrong.key", [0x77; 32]);
    let wrong_env = [("LETHE_MASTER_KEY_FILE", wrong.to_str().unwrap())];
    let submitted = run(
        dir.path(),
        &[
            "submit",
            "--subject",
            "user_id=9",
            "--json",
            "--database-url",
            &url,
        ],
    )
    .await
    .ok();
    let id = submitted.json()["id"].as_str().unwrap().to_owned();
    let (right_key, wrong_key) = (fingerprint(&right), fingerprint(&wrong));

    for args in [
        vec!["submit", "--subject", "user_id=10", "--database-url", &url],
        vec!["serve", "--listen", "127.0.0.1:0", "--database-url", &url],
    ] {
        let refused = run_with_env(dir.path(), &args, &wrong_env).await.expect(1);
        assert!(
            refused.stderr.contains(&right_key) && refused.stderr.contains(&wrong_key),
            "{refused:?}"
        );
    }
    let history = run_with_env(
        dir.path(),
        &["history", &id, "--json", "--database-url", &url],
        &wrong_env,
    )
    .await
    .ok();
    let json = history.json();
    assert_eq!(json["subject"], "sealed", "{history:?}");
    assert_eq!(json["verified"], true, "{history:?}");
    assert_eq!(json["events"].as_array().unwrap().len(), 1, "{history:?}");
    assert!(
        history.stderr.contains(&right_key) && history.stderr.contains(&wrong_key),
        "{history:?}"
    );
    let history = run(
        dir.path(),
        &["history", &id, "--json", "--database-url", &url],
    )
    .await
    .ok();
    assert_eq!(history.json()["subject"]["identifiers"]["user_id"], "9");
    let status = run(dir.path(), &["keys", "status", "--database-url", &url])
        .await
        .ok();
    assert!(
        status
            .stdout
            .contains(&format!("database key:   {right_key} current")),
        "{status:?}"
    );
}

/// `lethe keys rotate` while `lethe serve` (started with the old key) keeps taking
/// submissions: it finishes, the server learned the new key from the database (every subject
/// opens, lookups by subject and external id still answer with the first request, new cancel
/// tokens come from the new key), a cancel link from before the rotation still cancels, every
/// data key is under the new key alone, and the old key is refused from then on. SQLite is
/// for a single process (docs/OPERATIONS.md): there the server is stopped for the rotation
/// and started again with the new key (the in-process rotation in `key_rotation.rs` covers
/// serving during a rotation on both backends).
async fn keys_rotate_while_serving(t: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    let old = support::binary::key_file(dir.path());
    let new = support::binary::write_key(dir.path(), "new.key", [0x42; 32]);
    let new_env = [("LETHE_MASTER_KEY_FILE", new.to_str().unwrap())];
    let while_serving = t.is_postgres();
    let mut serving = Some(Server::spawn(lethe(dir.path()), &["--database-url", &url]).await);
    let log = |serving: &Option<Server>| serving.as_ref().map(Server::log).unwrap_or_default();
    let client = http_client();
    let base = Arc::new(Mutex::new(serving.as_ref().unwrap().url("")));
    let submit = |user: String, external: Option<&'static str>| {
        let client = client.clone();
        let url = format!("{}/v1/requests", base.lock().unwrap());
        async move {
            let mut body = serde_json::json!({"subject": {"user_id": user}});
            if let Some(external) = external {
                body["external_id"] = external.into();
            }
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let mut requests = Vec::new();
    for n in 0..6 {
        let external = (n == 0).then_some("crm-rotate");
        let (status, body) = submit(format!("before-{n}"), external).await;
        assert_eq!(status, 201, "{body}");
        requests.push((format!("before-{n}"), body));
    }

    if !while_serving {
        serving.take().unwrap().kill().await;
    }
    let mut rotate = lethe(dir.path())
        .args([
            "keys",
            "rotate",
            "--new-key-file",
            new.to_str().unwrap(),
            "--batch",
            "2",
            "--database-url",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Submissions while the rotation runs (bounded).
    let mut n = 0;
    let rotated = loop {
        if !while_serving {
            break rotate.wait().await.unwrap();
        }
        if let Some(status) = rotate.try_wait().unwrap() {
            break status;
        }
        assert!(n < 2_000, "the rotation did not finish:\n{}", log(&serving));
        let user = format!("during-{n}");
        let (status, body) = submit(user.clone(), None).await;
        assert_eq!(status, 201, "{body}\n{}", log(&serving));
        requests.push((user, body));
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = rotate.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        rotated.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (old_key, new_key) = (fingerprint(&old), fingerprint(&new));
    assert!(
        stdout.contains(&format!("rotated from {old_key} to {new_key}")),
        "{stdout}"
    );
    let server = match serving {
        Some(server) => {
            assert!(n > 0, "some submissions ran during the rotation");
            server
        }
        None => {
            let mut command = lethe(dir.path());
            command.envs(new_env);
            let server = Server::spawn(command, &["--database-url", &url]).await;
            *base.lock().unwrap() = server.url("");
            server
        }
    };

    let left = t
        .fetch_integers(&format!(
            "SELECT COUNT(*) FROM request_keys WHERE wrapped_key NOT LIKE '{new_key}:%'"
        ))
        .await;
    assert_eq!(left, [0], "every data key is under the new key");
    for (user, body) in &requests {
        let id = body["id"].as_str().unwrap();
        let history: Value = client
            .get(server.url(&format!("/v1/requests/{id}/history")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            history["subject"]["identifiers"]["user_id"],
            *user,
            "{history}\n{}",
            server.log()
        );
    }
    let (status, again) = submit("before-3".to_owned(), None).await;
    assert_eq!(
        (status, &again["id"]),
        (200, &requests[3].1["id"]),
        "{again}"
    );
    let (status, again) = submit("someone".to_owned(), Some("crm-rotate")).await;
    assert_eq!(
        (status, &again["id"]),
        (200, &requests[0].1["id"]),
        "{again}"
    );
    let (status, fresh) = submit("after".to_owned(), None).await;
    assert_eq!(status, 201);
    let fresh_id: RequestId = fresh["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        fresh["cancel_token"],
        MasterKey::read(&new).unwrap().cancel_token(fresh_id)
    );

    let (_, first) = &requests[1];
    let cancelled = client
        .post(server.url(&format!(
            "/v1/requests/{}/cancel?token={}",
            first["id"].as_str().unwrap(),
            first["cancel_token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200, "{}", server.log());
    server.kill().await;

    let refused = run(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--database-url", &url],
    )
    .await
    .expect(1);
    assert!(
        refused.stderr.contains(&old_key) && refused.stderr.contains(&new_key),
        "{refused:?}"
    );
    let id = requests[2].1["id"].as_str().unwrap();
    let history = run_with_env(
        dir.path(),
        &["history", id, "--json", "--database-url", &url],
        &new_env,
    )
    .await
    .ok();
    assert_eq!(
        history.json()["subject"]["identifiers"]["user_id"],
        "before-2"
    );
}
