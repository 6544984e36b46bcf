//! The Apache-Kafka-compatible broker tansu 0.6.0 as a child process, for end-to-end tests.
//!
//! Each [`Tansu`] runs in an empty temp dir (tansu reads a `.env` from its working directory)
//! on a free 127.0.0.1 port, with in-memory storage. [`Tansu::stop`] kills it like a crash and
//! [`Tansu::restart`] starts it again on the same port; memory storage forgets every topic,
//! message, producer id and consumer group on a restart, so topics must be created again. The
//! child is killed when the value drops, so a failed test leaves no broker behind.
//!
//! The binary is `LETHE_TANSU_BIN`, else the cache that `scripts/tansu.sh` installs into
//! (`${LETHE_CACHE_DIR:-$HOME/.cache/lethe}/tansu-0.6.0/bin/tansu`). Without one the tests fail
//! and say how to install it: they are never skipped silently.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

pub const VERSION: &str = "0.6.0";

/// How long a start may take before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The tansu binary to run; panics with the way to install it when there is none.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LETHE_TANSU_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "LETHE_TANSU_BIN={} is not a file; install tansu {VERSION} with scripts/tansu.sh",
            bin.display()
        );
        return bin;
    }
    let cache = std::env::var_os("LETHE_CACHE_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("lethe")
        },
        PathBuf::from,
    );
    let bin = cache.join(format!("tansu-{VERSION}/bin/tansu"));
    assert!(
        bin.is_file(),
        "this test needs the Kafka-compatible broker tansu {VERSION}, and {} does not exist. \
         Install it once (15-30 minutes) with scripts/tansu.sh, which runs \
         `cargo install tansu --version {VERSION} --locked --no-default-features --features \
         dynostore --root <cache>/tansu-{VERSION}`, or point LETHE_TANSU_BIN at a tansu {VERSION} \
         binary. scripts/test.sh does this by itself.",
        bin.display()
    );
    bin
}

/// A running (or deliberately stopped) tansu broker.
#[derive(Debug)]
pub struct Tansu {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// How many times the broker was started, to name its log files.
    starts: u32,
}

impl Tansu {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        let bin = binary();
        let version = Command::new(&bin).arg("--version").output().unwrap();
        let version = String::from_utf8_lossy(&version.stdout);
        assert_eq!(
            version.trim(),
            format!("tansu {VERSION}"),
            "{} is not tansu {VERSION}",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut tansu = Self {
            bin,
            dir: tempfile::tempdir().unwrap(),
            port,
            child: None,
            starts: 0,
        };
        tansu.launch().await;
        tansu
    }

    /// `bootstrap.servers` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker at once (like a crash) and waits until its port is closed.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill(child);
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "port {} still answers after the broker was killed",
            self.port
        );
    }

    /// Starts the broker again on the same port. With memory storage it starts empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// Creates the topics (an existing one is fine), each with this many partitions.
    pub async fn create_topics(&self, topics: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let new: Vec<_> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(20)))
            .operation_timeout(Some(Duration::from_secs(20)));
        let results =
            tokio::time::timeout(Duration::from_secs(30), admin.create_topics(&new, &options))
                .await
                .expect("creating topics took more than 30 s")
                .unwrap_or_else(|e| {
                    panic!("creating topics {topics:?} failed: {e}\n{}", self.logs())
                });
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => panic!("creating topic {topic} failed: {code:?}"),
            }
        }
    }

    /// Everything the broker wrote to stdout and stderr so far, for failure messages.
    pub fn logs(&self) -> String {
        let mut logs = String::new();
        for start in 1..=self.starts {
            let path = self.dir.path().join(format!("tansu-{start}.log"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(40).collect();
            logs.push_str(&format!("--- tansu start {start}, last lines ---\n"));
            for line in tail.into_iter().rev() {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        logs
    }

    async fn launch(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("tansu-{}.log", self.starts)))
            .unwrap();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // A watchdog shell between the test and tansu kills the broker when its stdin closes:
        // on `stop`, and when the test process dies without running `Drop` (a crash, a
        // signal), so that no broker outlives its test.
        let mut command = Command::new("sh");
        command
            .current_dir(self.dir.path())
            .args(["-c", WATCHDOG, "tansu-watchdog"])
            .arg(&self.bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env(
                "RUST_LOG",
                std::env::var("LETHE_TANSU_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Settings tansu would otherwise take from the test's environment.
        for variable in [
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            command.env_remove(variable);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}", self.bin.display());
        });
        // Held by `self` from here on, so that a failed start still kills it.
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "tansu exited during start-up with {status}\n{}",
                    self.logs()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on port {} within {START_DEADLINE:?}\n{}",
                self.port,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill(child);
        }
    }
}

/// `sh -c` script: runs its arguments as the broker, kills it with SIGKILL once stdin closes,
/// and exits with the broker's status (so an early exit of tansu is seen as the shell's).
/// (A background job reads /dev/null unless told otherwise, hence the explicit `<&3`.)
const WATCHDOG: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
broker=$!
(read -r _; kill -9 "$broker" 2>/dev/null) <&3 &
reader=$!
wait "$broker"
status=$?
kill "$reader" 2>/dev/null
exit "$status"
"#;

/// Closes the watchdog's stdin, so that it kills the broker, and waits for both to be gone.
fn kill(mut watchdog: Child) {
    drop(watchdog.stdin.take());
    let _ = watchdog.wait();
}
