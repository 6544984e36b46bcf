//! Crash safety of the workflow, black-box: the real `lethe serve` binary on a real database
//! is killed with SIGKILL at random moments and restarted, alone or as one of two processes
//! sharing the work, while it works through erasure requests against HTTP cleaners on
//! 127.0.0.1 (one of them flaky):
//!
//! - with every request submitted before the first kill (Postgres and SQLite; two processes
//!   on Postgres);
//! - while requests arrive over HTTP, one by one and in bulk, through an address that stays
//!   put while the process behind it dies (a gateway standing in for a load balancer), while
//!   reminders fall due and go to a `[notifier]`, and while a cleaner that answers 202 calls
//!   back with its results (Postgres and SQLite);
//! - while the Kafka broker (tansu) is killed with messages in flight, and comes back empty
//!   (SQLite; skipped, saying so, without `LETHE_TANSU_BIN`).
//!
//! Whatever the moment of death: every request ends with exactly one `Received`, one `Due` and
//! one `Completed`; no submission that was answered 2xx is lost, a submission retried after
//! the kill left it unanswered names the same request as any other answer to it, and no
//! submission makes two requests; every cleaner heard of every request, always under the same
//! `Idempotency-Key` and with a valid signature, with attempt numbers that never go backwards,
//! and no more often than [`Tally`]'s bound allows; and `lethe verify` still finds every hash
//! chain intact. In-process, on both backends, a subscription owner whose lease ran out and was
//! taken over cannot commit a batch (fencing), and a restarted runner resumes at the checkpoint
//! without handling earlier events again.
//!
//! Each scenario runs once per seed of `support/seeds.rs` (a fixed set and one drawn at
//! random, each printed; `LETHE_CRASH_SEED=<n>` runs one alone). Every wait polls a condition
//! with a deadline, and every spawned process is killed even when an assertion fails.
#[path = "../support/async_cleaner.rs"]
mod async_cleaner;
#[path = "../support/child.rs"]
mod child;
#[path = "../support/gateway.rs"]
mod gateway;
#[path = "../support/intake.rs"]
mod intake;
#[path = "../support/kafka_cleaner.rs"]
mod kafka_cleaner;
#[path = "../support/seeds.rs"]
mod seeds;
#[path = "../support/mod.rs"]
mod support;
#[path = "../support/tansu.rs"]
mod tansu;

mod broker;
mod checks;
mod fencing;
mod http_intake;
mod kills;
mod server;
mod workload;

use server::*;
use workload::*;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_cleaner::AsyncCleaner;
use chrono::Utc;
use gateway::Gateway;
use kafka_cleaner::KafkaCleaner;
use lethe_domain::RequestId;
use lethe_engine::app::{Requests, Submission};
use lethe_engine::store::{Checkpoint, EventStore, RecordedEvent, StoreError};
use lethe_engine::subscriptions::{Subscriber, SubscriptionRunner, Writing};
use lethe_engine::workflow::saga::{Saga, SAGA};
use lethe_engine::workflow::{JobChange, WorkflowStore};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use support::config::{Cleaner as CleanerSettings, TestConfig};
use support::fake_service::{Call, FakeService, SECRET};
use support::TestStore;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// Requests in each crash workload submitted before the first kill.
const REQUESTS: usize = 150;
/// SIGKILLs per crash run, at least.
const KILLS: usize = 5;
/// The HTTP cleaners of every crash workload; the last one fails 30 % of its calls with 503.
const CLEANERS: [&str; 3] = ["billing", "crm", "flaky"];
const FLAKY_RATE: f64 = 0.3;
/// The cleaner that answers 202 and reports later, when a workload has one; it reports a
/// failure for this share of its attempts.
const BATCH: &str = "batch";
const BATCH_FAILURE_RATE: f64 = 0.1;
/// How long a cleaner that answered 202 (or a Kafka cleaner) has to report a result before
/// the attempt fails and the next is made.
const CALLBACK_TIMEOUT: &str = "4s";
/// The Kafka cleaner, when a workload has one, and the topics it and Lethe use: Due messages
/// (and retries) first, results fourth.
const SEARCH: &str = "search";
const KAFKA_TOPICS: [&str; 5] = [
    "lethe.due",
    "lethe.completed",
    "lethe.cancelled",
    "lethe.cleaner-results",
    "lethe.dead-letter",
];
/// How long the last process may take to complete every request.
const COMPLETION_DEADLINE: Duration = Duration::from_secs(120);
/// How long `lethe serve` may take to say it serves.
const SERVE_DEADLINE: Duration = Duration::from_secs(30);
/// How long one `lethe` command (or a kill) may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// How long a lone surviving process may take to complete a fresh batch of requests.
const SOLO_DEADLINE: Duration = Duration::from_secs(60);

/// Settings from the environment that would change what the binary does.
const LETHE_ENV: [&str; 6] = [
    "LETHE_DATABASE_URL",
    "LETHE_CONFIG",
    "LETHE_LISTEN",
    "LETHE_MASTER_KEY_FILE",
    "LETHE_KAFKA_BROKERS",
    "RUST_LOG",
];

/// The crash runs each run up to two engines at full speed; one at a time per backend keeps
/// them within a small machine (and far from Postgres' connection limit), while a run on
/// SQLite and one on Postgres overlap: most of a run is spent waiting (for leases to run out,
/// for retries and timers), not computing.
static ON_POSTGRES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static ON_SQLITE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the turn of a run on `store`'s backend, then prints its seed.
async fn turn(store: &TestStore, run: &str, seed: u64) -> tokio::sync::MutexGuard<'static, ()> {
    let guard = if store.is_postgres() {
        ON_POSTGRES.lock().await
    } else {
        ON_SQLITE.lock().await
    };
    seeds::announce(run, seed);
    guard
}

/// `lethe` with `dir` as working directory, a clean environment and the master key file.
fn lethe(dir: &Path, key_file: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lethe"));
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in LETHE_ENV {
        command.env_remove(name);
    }
    command.env("LETHE_MASTER_KEY_FILE", key_file);
    command
}
fn count(events: &[RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

fn random_run(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.random_range(300..=1500))
}
