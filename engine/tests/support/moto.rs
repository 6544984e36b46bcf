//! moto's S3-compatible server (`moto_server`) as a child process, for the tests of the
//! object_store cleaner: one server per test, on a free 127.0.0.1 port, in memory.
//! [`Moto::stop`] kills it like an outage and [`Moto::restart`] starts it again on the same
//! port (empty: memory storage forgets every bucket). The child is killed when the value drops.
//!
//! The binary is `LETHE_TEST_MOTO_BIN`, else the virtualenv `scripts/services/s3.sh` installs
//! (`${LETHE_CACHE_DIR:-$HOME/.cache/lethe}/moto-venv/bin/moto_server`). With neither, the tests
//! say so loudly on stderr and pass without running (`scripts/test.sh` always provides it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The moto_server binary, or `None` (after saying so) when there is none.
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("LETHE_TEST_MOTO_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "LETHE_TEST_MOTO_BIN={} is not a file; install moto with scripts/services/s3.sh",
            bin.display()
        );
        return Some(bin);
    }
    let cache = std::env::var_os("LETHE_CACHE_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("lethe")
        },
        PathBuf::from,
    );
    let bin = cache.join("moto-venv/bin/moto_server");
    if bin.is_file() {
        return Some(bin);
    }
    eprintln!(
        "\n*** SKIPPED: this test needs moto's S3 server and neither LETHE_TEST_MOTO_BIN is set \
         nor {} exists. Install it with scripts/services/s3.sh (scripts/test.sh does). ***\n",
        bin.display()
    );
    None
}

/// A running (or deliberately stopped) moto server.
#[derive(Debug)]
pub struct Moto {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Moto {
    /// Starts a server on a free port and waits until it answers; `None` when moto is not
    /// installed (the test then returns).
    pub async fn start() -> Option<Self> {
        let bin = binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut moto = Self {
            bin,
            dir: tempfile::tempdir().unwrap(),
            port,
            child: None,
            starts: 0,
        };
        moto.launch().await;
        Some(moto)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once and waits until its port is closed.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill(child);
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "port {} still answers after moto was killed",
            self.port
        );
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// The last lines the server wrote, for failure messages.
    pub fn logs(&self) -> String {
        let path = self.dir.path().join(format!("moto-{}.log", self.starts));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<_> = text.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    async fn launch(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("moto-{}.log", self.starts)))
            .unwrap();
        // The watchdog shell kills the server when its stdin closes: on `stop`, and when the
        // test process dies without running `Drop`.
        let child = Command::new("sh")
            .current_dir(self.dir.path())
            .args(["-c", WATCHDOG, "moto-watchdog"])
            .arg(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        let client = reqwest::Client::new();
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!("moto exited during start-up with {status}\n{}", self.logs());
            }
            if client.get(self.endpoint()).send().await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto did not answer on port {} within {START_DEADLINE:?}\n{}",
                self.port,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill(child);
        }
    }
}

/// `sh -c` script: runs its arguments as the server and kills it with SIGKILL once stdin
/// closes. (A background job reads /dev/null unless told otherwise, hence `<&3`.)
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

/// Closes the watchdog's stdin, so that it kills the server, and waits for it to be gone.
fn kill(mut watchdog: Child) {
    drop(watchdog.stdin.take());
    let _ = watchdog.wait();
}
