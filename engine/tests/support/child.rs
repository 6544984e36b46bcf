#![allow(dead_code)] // each test binary uses a different part of this module

//! A server the tests run as a child process (tansu, moto): found in the cache the project's
//! scripts install into, started on a free 127.0.0.1 port in an empty temp dir, killed like a
//! crash by [`Child::stop`], started again on the same port by [`Child::launch`], and killed
//! when the value drops. A watchdog shell between the test and the server kills the server
//! when its stdin closes, so no server outlives its test, even one that dies without `Drop`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `$env` when set (it must name a file), else `relative` under the cache the scripts install
/// into, `${LETHE_CACHE_DIR:-$HOME/.cache/lethe}`: `Ok` when that exists, else `Err` with the
/// path looked at.
pub fn cached_binary(env: &str, relative: &str) -> Result<PathBuf, PathBuf> {
    if let Some(bin) = std::env::var_os(env) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "{env}={} is not a file", bin.display());
        return Ok(bin);
    }
    let cache = std::env::var_os("LETHE_CACHE_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("lethe")
        },
        PathBuf::from,
    );
    let bin = cache.join(relative);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(bin)
    }
}

/// One server process, running or deliberately stopped.
#[derive(Debug)]
pub struct Child {
    /// What the server is, for messages.
    name: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    process: Option<std::process::Child>,
    /// How many times it was started, to name its log files.
    starts: u32,
}

impl Child {
    /// A server not started yet, with a free port and an empty working directory.
    pub fn new(name: &'static str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            name,
            dir: tempfile::tempdir().unwrap(),
            port,
            process: None,
            starts: 0,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts `command` (program and arguments set; this sets the directory and the output)
    /// and waits at most `deadline` until `ready()` says it serves. Fails with its last log
    /// lines if it exits or is not ready in time.
    pub async fn launch<F>(
        &mut self,
        command: &Command,
        deadline: Duration,
        mut ready: impl FnMut() -> F,
    ) where
        F: std::future::Future<Output = bool>,
    {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        let mut watchdog = Command::new("sh");
        watchdog
            .current_dir(self.dir.path())
            .args(["-c", WATCHDOG, "watchdog"])
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => watchdog.env(key, value),
                None => watchdog.env_remove(key),
            };
        }
        let process = watchdog.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({:?}): {e}",
                self.name,
                command.get_program()
            )
        });
        // Held by `self` from here on, so that a failed start still kills it.
        self.process = Some(process);
        let until = Instant::now() + deadline;
        loop {
            let process = self.process.as_mut().unwrap();
            if let Some(status) = process.try_wait().unwrap() {
                panic!(
                    "{} exited during start-up with {status}\n{}",
                    self.name,
                    self.logs()
                );
            }
            if ready().await {
                return;
            }
            assert!(
                Instant::now() < until,
                "{} did not serve on port {} within {deadline:?}\n{}",
                self.name,
                self.port,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server at once (like a crash) and checks that its port is closed.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            kill(process);
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "port {} still answers after {} was killed",
            self.port,
            self.name
        );
    }

    /// The last lines each start wrote to stdout and stderr, for failure messages.
    pub fn logs(&self) -> String {
        let mut logs = String::new();
        for start in 1..=self.starts {
            let text = std::fs::read_to_string(self.log_path(start)).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(40).collect();
            logs.push_str(&format!(
                "--- {} start {start}, last lines ---\n",
                self.name
            ));
            for line in tail.into_iter().rev() {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        logs
    }

    fn log_path(&self, start: u32) -> PathBuf {
        Path::new(self.dir.path()).join(format!("{}-{start}.log", self.name))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            kill(process);
        }
    }
}

/// Whether something accepts connections on `port` of 127.0.0.1.
pub async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// `sh -c` script: runs its arguments as the server, kills it with SIGKILL once stdin closes,
/// and exits with the server's status (so an early exit is seen as the shell's). (A background
/// job reads /dev/null unless told otherwise, hence the explicit `<&3`.)
const WATCHDOG: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
server=$!
(read -r _; kill -9 "$server" 2>/dev/null) <&3 &
reader=$!
wait "$server"
status=$?
kill "$reader" 2>/dev/null
exit "$status"
"#;

/// Closes the watchdog's stdin, so that it kills the server, and waits for both to be gone.
fn kill(mut watchdog: std::process::Child) {
    drop(watchdog.stdin.take());
    let _ = watchdog.wait();
}
