//! The `lethe` binary, black-box: each test runs it in a temp dir of its own as working
//! directory (so the default `sqlite://./lethe-data/lethe.db` lands there) with the `LETHE_*`
//! environment cleared. Covered: the README tour (serve, submit over HTTP, then history, show
//! and verify on the embedded default), `submit` with jurisdictions and external ids, tamper
//! detection by `verify` and `history` on both backends, idempotent `migrate`, config and
//! usage errors with their exit codes, and that `lethe.toml`, the environment overrides and
//! the master key file are honoured. Every wait is bounded, and a spawned server is killed
//! even when an assertion fails.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod cleaners;
mod config;
mod coverage;
mod export;
mod integrity;
mod keys;
mod pipe;
mod receipt;
mod report;
mod tour;

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
use lethe_engine::projections::RequestFilter;
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
fn fingerprint(key_file: &Path) -> String {
    lethe_engine::store::master_key::KeyMaterial::read(key_file)
        .unwrap()
        .fingerprint()
}
