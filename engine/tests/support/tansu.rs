//! The Apache-Kafka-compatible broker tansu 0.6.0 as a child process, for end-to-end tests.
//!
//! Each [`Tansu`] runs as a [`Child`] (`support/child.rs`): in an empty temp dir (tansu reads a
//! `.env` from its working directory) on a free 127.0.0.1 port, with in-memory storage. [`Tansu::stop`] kills it like a crash and
//! [`Tansu::restart`] starts it again on the same port; memory storage forgets every topic,
//! message, producer id and consumer group on a restart, so topics must be created again. The
//! child is killed when the value drops, so a failed test leaves no broker behind.
//!
//! The binary is `LETHE_TANSU_BIN`, else the cache that `scripts/tansu.sh` installs into
//! (`${LETHE_CACHE_DIR:-$HOME/.cache/lethe}/tansu-0.6.0/bin/tansu`). Without one the tests fail
//! and say how to install it: they are never skipped silently.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::child::{cached_binary, listening, Child};

pub const VERSION: &str = "0.6.0";

/// How long a start may take before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The tansu binary to run; panics with the way to install it when there is none.
pub fn binary() -> PathBuf {
    let relative = format!("tansu-{VERSION}/bin/tansu");
    cached_binary("LETHE_TANSU_BIN", &relative).unwrap_or_else(|bin| {
        panic!(
            "this test needs the Kafka-compatible broker tansu {VERSION}, and {} does not exist. \
             Install it once (15-30 minutes) with scripts/tansu.sh, which runs \
             `cargo install tansu --version {VERSION} --locked --no-default-features --features \
             dynostore --root <cache>/tansu-{VERSION}`, or point LETHE_TANSU_BIN at a tansu \
             {VERSION} binary. scripts/test.sh does this by itself.",
            bin.display()
        )
    })
}

/// A running (or deliberately stopped) tansu broker.
#[derive(Debug)]
pub struct Tansu {
    bin: PathBuf,
    child: Child,
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
        let mut tansu = Self {
            bin,
            child: Child::new("tansu"),
        };
        tansu.launch().await;
        tansu
    }

    /// `bootstrap.servers` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.child.port())
    }

    /// Kills the broker at once (like a crash) and waits until its port is closed.
    pub fn stop(&mut self) {
        self.child.stop();
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

    /// The last lines the broker wrote, for failure messages.
    pub fn logs(&self) -> String {
        self.child.logs()
    }

    async fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.child.port());
        let mut command = Command::new(&self.bin);
        command
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env(
                "RUST_LOG",
                std::env::var("LETHE_TANSU_LOG").unwrap_or_else(|_| "warn".to_owned()),
            );
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
        let port = self.child.port();
        self.child
            .launch(&command, START_DEADLINE, || listening(port))
            .await;
    }
}
