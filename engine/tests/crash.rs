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

#[path = "support/async_cleaner.rs"]
mod async_cleaner;
#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/intake.rs"]
mod intake;
#[path = "support/kafka_cleaner.rs"]
mod kafka_cleaner;
#[path = "support/seeds.rs"]
mod seeds;
mod support;
#[path = "support/tansu.rs"]
mod tansu;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
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
use lethe_engine::config::Config;
use lethe_engine::store::{Checkpoint, EventStore, RecordedEvent, StoreError};
use lethe_engine::subscriptions::{Subscriber, SubscriptionRunner, Writing};
use lethe_engine::workflow::saga::{Saga, SAGA};
use lethe_engine::workflow::{JobChange, WorkflowStore};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
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

/// A running `lethe serve`: SIGKILLed when dropped, whatever happened in the test.
struct Server {
    name: String,
    child: Child,
    /// Where it listens.
    address: SocketAddr,
    /// Everything the server wrote to stderr, for failure messages.
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `lethe serve` on the workload's config and database, waits until it says it
    /// serves, and sends the workload's gateway to it.
    async fn start(workload: &Workload, name: &str) -> Self {
        let url = workload.store.database_url();
        let config = workload.config_path.display().to_string();
        let mut child = lethe(workload.dir.path(), &workload.key_file)
            .args([
                "serve",
                "--config",
                &config,
                "--database-url",
                &url,
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let serving = timeout(SERVE_DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if line.contains("lethe is serving") {
                    if let Some(address) = listen_address(&line) {
                        return Some(address);
                    }
                }
            }
            None
        })
        .await;
        // On a panic the child is dropped, and so killed (`kill_on_drop`).
        let address = match serving {
            Ok(Some(address)) => address,
            Ok(None) => panic!("{name} exited before serving:\n{}", log.lock().unwrap()),
            Err(_) => panic!(
                "{name} did not serve within {SERVE_DEADLINE:?}:\n{}",
                log.lock().unwrap()
            ),
        };
        // Keep reading so the server never blocks on a full pipe.
        tokio::spawn({
            let log = log.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                }
            }
        });
        workload.gateway.route_to(Some(address));
        Self {
            name: name.to_owned(),
            child,
            address,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The last lines of the log, for failure messages.
    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!(
            "--- {} (last lines)\n{}\n",
            self.name,
            lines[start..].join("\n")
        )
    }

    /// Panics (with the log) if the server died on its own.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited by itself with {status}:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// SIGKILL (no chance to release leases or finish calls), and wait until it is gone.
    async fn kill(mut self) {
        self.assert_alive();
        timeout(COMMAND_DEADLINE, self.child.kill())
            .await
            .unwrap_or_else(|_| panic!("{} did not die within {COMMAND_DEADLINE:?}", self.name))
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The address in `lethe is serving listen=127.0.0.1:40123 ...`.
fn listen_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listen=")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// What a crash workload runs against, beyond the three HTTP cleaners.
#[derive(Debug, Clone)]
struct Setup {
    /// `[policy]`: the grace period and the reminders (TOML values).
    grace_period: &'static str,
    reminders: &'static str,
    /// A `[notifier]` on 127.0.0.1 that accepts every reminder.
    notifier: bool,
    /// The cleaner [`BATCH`], which answers 202 and reports through the callback URL.
    batch_cleaner: bool,
    /// `[kafka]` on these brokers, and the Kafka cleaner [`SEARCH`] reading from them.
    kafka: Option<String>,
}

impl Setup {
    /// Every request submitted up front; no reminders, no notifier, HTTP cleaners that answer
    /// at once.
    const PLAIN: Self = Self {
        grace_period: "\"1s\"",
        reminders: "[]",
        notifier: false,
        batch_cleaner: false,
        kafka: None,
    };
}

/// A cleaner as the workload sees it: one that answers at once, one that reports later, or
/// one that reads Kafka.
enum Cleaner {
    Answering(FakeService),
    Reporting(AsyncCleaner),
    Reading(KafkaCleaner),
}

/// One call (or Kafka message) a cleaner got: the request and the attempt, and for an HTTP
/// call the call itself.
struct Heard {
    request_id: String,
    attempt: u64,
    call: Option<Call>,
}

impl Cleaner {
    fn heard(&self) -> Vec<Heard> {
        let calls = match self {
            Self::Answering(service) => service.calls(),
            Self::Reporting(service) => service.calls(),
            Self::Reading(service) => {
                return service
                    .handled()
                    .into_iter()
                    .map(|handled| Heard {
                        request_id: handled.request_id,
                        attempt: handled.attempt,
                        call: None,
                    })
                    .collect()
            }
        };
        calls
            .into_iter()
            .map(|call| Heard {
                request_id: call.body["request_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                attempt: call.body["attempt"].as_u64().unwrap(),
                call: Some(call),
            })
            .collect()
    }
}

/// A temp dir with `lethe.toml` and a key file, a fresh schema or SQLite file, the fake
/// cleaners (and notifier), the gateway in front of `lethe serve`, the requests submitted so
/// far and the kills so far.
struct Workload {
    store: TestStore,
    events: Arc<dyn EventStore>,
    workflow: Arc<dyn WorkflowStore>,
    requests: Requests,
    cleaners: Vec<(&'static str, Cleaner)>,
    notifier: Option<FakeService>,
    gateway: Gateway,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    key_file: PathBuf,
    ids: Vec<RequestId>,
    /// Reminders per request.
    reminder_count: u64,
    /// SIGKILLs of `lethe serve`, and of the Kafka broker.
    kills: usize,
    broker_kills: usize,
    seed: u64,
}

/// Reminder events by request, reminder index and type.
type Reminders = BTreeMap<((String, u64), &'static str), usize>;

/// The events that record what became of a reminder, in versions that record it.
const REMINDER_OUTCOMES: [&str; 2] = ["ReminderSent", "ReminderNotSent"];

/// Whether the log records reminders' outcomes (versions before recorded `Reminded` only).
fn records_reminder_outcomes(reminders: &Reminders) -> bool {
    reminders
        .keys()
        .any(|(_, kind)| REMINDER_OUTCOMES.contains(kind))
}

/// How far a workload had got at one moment.
#[derive(Clone, Copy)]
struct Progress {
    /// Requests in the log, notifier calls, results the 202 cleaner reported, requests
    /// completed.
    requests: usize,
    notified: usize,
    reported: usize,
    completed: usize,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests/{} notified/{} reported/{} completed",
            self.requests, self.notified, self.reported, self.completed
        )
    }
}

/// What the final checks counted.
///
/// The bound on cleaner calls: a cleaner is called for a request at most `1 + f + k` times,
/// where `f` is the number of `CleanerFailed` events of that request and cleaner in the log
/// and `k` the number of SIGKILLs in the run. Each attempt is made at least once; each
/// recorded failure (a 503, a reported failure, a 202 whose result missed `callback_timeout`)
/// legitimately causes one more attempt; and an attempt is repeated only when the process
/// making it died before its outcome was in the log (the next process finds the job after its
/// lease ran out and makes the attempt again), which each kill can cause at most once per
/// request and cleaner, as a process has at most one call of a request's cleaner in flight.
#[derive(Debug, Default)]
struct Tally {
    calls: usize,
    /// Calls beyond one per request and cleaner (retries after failures included).
    extra_calls: usize,
    /// Calls that repeated an attempt already made: what a crash costs under at-least-once.
    repeated_attempts: usize,
    /// The most calls of one cleaner for one request beyond its attempts' due (`1 + f`).
    most_repeats: usize,
    failures: usize,
    /// Notifier calls, and the most for one reminder of one request.
    notifications: usize,
    most_notifications: usize,
    /// Reminder events in the log, by type.
    reminder_events: BTreeMap<&'static str, usize>,
}

impl Workload {
    async fn new(seed: u64, store: TestStore, setup: Setup) -> Self {
        let (events, workflow) = store.stores();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cleaners = Vec::new();
        for name in CLEANERS {
            let service = if name == "flaky" {
                // The script makes the failures happen even where the failure rate is not
                // applied by the fake service; after it, the rate applies.
                let script: Vec<u16> = (0..2000)
                    .map(|_| {
                        if rng.random_bool(FLAKY_RATE) {
                            503
                        } else {
                            200
                        }
                    })
                    .collect();
                FakeService::start_with(&script, FLAKY_RATE).await
            } else {
                FakeService::start(&[]).await
            };
            cleaners.push((name, Cleaner::Answering(service)));
        }
        if setup.batch_cleaner {
            let service = AsyncCleaner::start(rng.random(), BATCH_FAILURE_RATE).await;
            cleaners.push((BATCH, Cleaner::Reporting(service)));
        }
        let gateway = Gateway::start().await;
        let mut config = format!(
            "[policy]\ngrace_period = {}\nreminders = {}\n\n\
             [engine]\npoll_interval = \"50ms\"\nlease = \"2s\"\npublic_url = \"{}\"\n",
            setup.grace_period, setup.reminders, gateway.url
        );
        let notifier = if setup.notifier {
            let service = FakeService::start(&[]).await;
            let _ = write!(
                config,
                "\n[notifier]\nurl = \"{}\"\ntimeout = \"2s\"\nsecret = \"{SECRET}\"\n",
                service.url
            );
            Some(service)
        } else {
            None
        };
        if let Some(brokers) = &setup.kafka {
            let _ = write!(config, "\n[kafka]\nbrokers = \"{brokers}\"\n");
            let service = KafkaCleaner::start(brokers, SEARCH, KAFKA_TOPICS[0], KAFKA_TOPICS[3]);
            cleaners.push((SEARCH, Cleaner::Reading(service)));
        }
        for (name, cleaner) in &cleaners {
            let kind = match cleaner {
                Cleaner::Answering(service) => {
                    format!(
                        "kind = \"http\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
                        service.url
                    )
                }
                Cleaner::Reporting(service) => {
                    format!(
                        "kind = \"http\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
                        service.url
                    )
                }
                Cleaner::Reading(_) => "kind = \"kafka\"\n".to_owned(),
            };
            let _ = write!(
                config,
                "\n[[cleaners]]\nname = \"{name}\"\n{kind}timeout = \"2s\"\n\
                 callback_timeout = \"{CALLBACK_TIMEOUT}\"\n\
                 retry = {{ max_attempts = 30, initial = \"100ms\", max = \"500ms\", multiplier = 2.0 }}\n"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("lethe.toml");
        std::fs::write(&config_path, &config).unwrap();
        let key_file = dir.path().join("master.key");
        let key: String = (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        let requests = Requests::new(events.clone(), Arc::new(Config::parse(&config).unwrap()));
        Self {
            store,
            events,
            workflow,
            requests,
            cleaners,
            notifier,
            gateway,
            dir,
            config_path,
            key_file,
            ids: Vec::new(),
            // The reminders are a TOML list of quoted durations.
            reminder_count: u64::try_from(setup.reminders.matches('"').count() / 2).unwrap(),
            kills: 0,
            broker_kills: 0,
            seed,
        }
    }

    /// SIGKILLs `server`, counted for the bound on cleaner calls.
    async fn kill(&mut self, server: Server) {
        if self.gateway.backend() == Some(server.address) {
            self.gateway.route_to(None);
        }
        server.kill().await;
        self.kills += 1;
    }

    /// Submits `n` more requests, each for a subject of its own; returns their ids.
    async fn submit(&mut self, n: usize) -> Vec<RequestId> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let index = self.ids.len() + ids.len();
            let submission = Submission {
                subject: BTreeMap::from([
                    ("user_id".to_owned(), format!("crash-{index}")),
                    ("email".to_owned(), format!("subject-{index}@example.com")),
                ]),
                jurisdiction: Some("gdpr".to_owned()),
                ..Submission::default()
            };
            let submitted = self
                .requests
                .submit(submission, None, "test")
                .await
                .unwrap();
            assert!(submitted.created);
            ids.push(submitted.loaded.request.id);
        }
        self.ids.extend(&ids);
        ids
    }

    /// How far the work had got: for the moments of the kills.
    async fn progress(&self) -> Progress {
        let reporting = self.cleaners.iter().find_map(|(_, c)| match c {
            Cleaner::Reporting(service) => Some(service),
            Cleaner::Answering(_) | Cleaner::Reading(_) => None,
        });
        Progress {
            requests: usize::try_from(
                self.store
                    .fetch_integers("SELECT COUNT(*) FROM streams")
                    .await[0],
            )
            .unwrap(),
            notified: self.notifier.as_ref().map_or(0, |n| n.calls().len()),
            reported: reporting.map_or(0, |c| c.reports().len()),
            completed: usize::try_from(self.completed_events().await).unwrap(),
        }
    }

    /// Waits (at most [`COMPLETION_DEADLINE`]) until the work has got as far as `reached`
    /// says, while `server` runs.
    async fn wait_for(&self, server: &mut Server, what: &str, reached: impl Fn(&Progress) -> bool) {
        let deadline = Instant::now() + COMPLETION_DEADLINE;
        loop {
            server.assert_alive();
            let progress = self.progress().await;
            if reached(&progress) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {COMPLETION_DEADLINE:?}: {progress:?}; seed {}\n{}",
                self.seed,
                server.tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many `Completed` events the log holds.
    async fn completed_events(&self) -> i64 {
        self.store
            .fetch_integers("SELECT COUNT(*) FROM events WHERE event_type = 'Completed'")
            .await[0]
    }

    /// How many of `ids` are completed.
    async fn completed_among(&self, ids: &[RequestId]) -> usize {
        let list: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
        let sql = format!(
            "SELECT COUNT(DISTINCT stream_id) FROM events \
             WHERE event_type = 'Completed' AND stream_id IN ({})",
            list.join(", ")
        );
        usize::try_from(self.store.fetch_integers(&sql).await[0]).unwrap()
    }

    /// Waits until every one of `ids` is completed, while `servers` run (at most `within`).
    async fn wait_completed(
        &self,
        ids: &[RequestId],
        servers: &mut [&mut Server],
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        loop {
            for server in servers.iter_mut() {
                server.assert_alive();
            }
            let done = self.completed_among(ids).await;
            if done == ids.len() {
                return;
            }
            if Instant::now() > deadline {
                let jobs = self.workflow.pending_jobs().await.unwrap();
                let logs: String = servers.iter().map(|s| s.tail()).collect();
                panic!(
                    "only {done} of {} requests completed within {within:?}; jobs waiting: \
                     {jobs:?}; seed {}\n{logs}",
                    ids.len(),
                    self.seed
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The invariants that no crash may break, over the log and what the cleaners and the
    /// notifier saw.
    async fn check(&self) -> Tally {
        let mut tally = Tally::default();
        let names: Vec<&str> = self.cleaners.iter().map(|(name, _)| *name).collect();
        // `CleanerFailed` events by request and cleaner, for the bound on calls.
        let mut failures: BTreeMap<(String, &str), usize> = BTreeMap::new();
        let reminders = self.reminders().await;
        let outcomes = records_reminder_outcomes(&reminders);
        for id in &self.ids {
            let events = self.events.read_stream(*id, 0).await.unwrap();
            let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            for (kind, expected) in [("Received", 1), ("Due", 1), ("Completed", 1)] {
                assert_eq!(count(&events, kind), expected, "{kind} of {id}: {kinds:?}");
            }
            // Only a reminder's outcome, a fact about a notification, may follow completion.
            let completed = kinds.iter().position(|k| *k == "Completed").unwrap();
            assert!(
                kinds[completed + 1..]
                    .iter()
                    .all(|k| REMINDER_OUTCOMES.contains(k)),
                "{id}: {kinds:?}"
            );
            for index in 0..self.reminder_count {
                let key = (id.to_string(), index);
                let of = |kind: &str| reminders.get(&(key.clone(), kind)).copied().unwrap_or(0);
                let (reminded, sent, not_sent) =
                    (of("Reminded"), of("ReminderSent"), of("ReminderNotSent"));
                assert!(
                    reminded <= 1 && sent + not_sent <= 1,
                    "{id}: reminder {index} recorded more than once: {kinds:?}"
                );
                // A version that records reminder outcomes records one for every reminder.
                if outcomes {
                    assert_eq!(
                        sent + not_sent,
                        1,
                        "{id}: reminder {index} has no outcome: {kinds:?}; seed {}",
                        self.seed
                    );
                }
            }
            for cleaner in &names {
                let of_cleaner = |kind: &str| -> Vec<u64> {
                    events
                        .iter()
                        .filter(|e| e.event_type == kind && e.payload["cleaner"] == *cleaner)
                        .map(|e| e.payload["attempt"].as_u64().unwrap())
                        .collect()
                };
                let succeeded = of_cleaner("CleanerSucceeded");
                assert_eq!(succeeded.len(), 1, "{id} {cleaner}: {kinds:?}");
                let failed = of_cleaner("CleanerFailed");
                let distinct: BTreeSet<u64> = failed.iter().copied().collect();
                assert_eq!(
                    distinct.len(),
                    failed.len(),
                    "one failure per attempt at most: {id} {cleaner}: {failed:?}"
                );
                let success = events
                    .iter()
                    .position(|e| {
                        e.event_type == "CleanerSucceeded" && e.payload["cleaner"] == *cleaner
                    })
                    .unwrap();
                assert!(
                    events[success..].iter().all(
                        |e| e.event_type != "CleanerFailed" || e.payload["cleaner"] != *cleaner
                    ),
                    "{id} {cleaner}: a failure recorded after the success: {kinds:?}"
                );
                tally.failures += failed.len();
                failures.insert((id.to_string(), *cleaner), failed.len());
            }
        }
        let known: BTreeSet<String> = self.ids.iter().map(ToString::to_string).collect();
        for (cleaner, service) in &self.cleaners {
            let kafka = matches!(service, Cleaner::Reading(_));
            let mut by_request: BTreeMap<String, Vec<Heard>> = BTreeMap::new();
            for heard in service.heard() {
                by_request
                    .entry(heard.request_id.clone())
                    .or_default()
                    .push(heard);
            }
            for id in by_request.keys() {
                assert!(known.contains(id), "{cleaner} was called for {id:?}");
            }
            for id in &self.ids {
                let heard = by_request
                    .get(&id.to_string())
                    .unwrap_or_else(|| panic!("{cleaner} never heard of {id}"));
                let key = format!("{id}:{cleaner}");
                let attempts: Vec<u64> = heard.iter().map(|h| h.attempt).collect();
                for call in heard.iter().filter_map(|h| h.call.as_ref()) {
                    assert_eq!(call.idempotency_key, key, "{cleaner}: {attempts:?}");
                    assert!(call.signature_ok, "{cleaner} {id}: a bad signature");
                    assert_eq!(call.body["cleaner"], *cleaner);
                }
                // Over Kafka a message published again (a relay that died before its
                // checkpoint, or a batch sent again after a broker failure) may arrive after a
                // later attempt's, so only HTTP calls are in order.
                if !kafka {
                    assert_eq!(attempts[0], 1, "{cleaner} {id}: {attempts:?}");
                    assert!(
                        attempts.windows(2).all(|w| w[0] <= w[1]),
                        "{cleaner} {id}: attempts went backwards: {attempts:?}"
                    );
                }
                // A broker kill can make the relay publish a batch once more, as a kill of
                // Lethe can.
                let kills = self.kills + if kafka { self.broker_kills } else { 0 };
                let failed = failures[&(id.to_string(), *cleaner)];
                assert!(
                    heard.len() <= 1 + failed + kills,
                    "{cleaner} was called {} times for {id}, more than 1 + {failed} failures \
                     + {kills} kills: attempts {attempts:?}; seed {}",
                    heard.len(),
                    self.seed
                );
                let distinct: BTreeSet<u64> = attempts.iter().copied().collect();
                tally.calls += heard.len();
                tally.extra_calls += heard.len() - 1;
                tally.repeated_attempts += heard.len() - distinct.len();
                tally.most_repeats = tally
                    .most_repeats
                    .max(heard.len().saturating_sub(1 + failed));
            }
        }
        if let Some(notifier) = &self.notifier {
            self.check_notifications(notifier, &reminders, &mut tally);
        }
        tally
    }

    /// Every notifier call is signed and for a reminder the log records (as reminded, or with
    /// its outcome), all calls for one reminder carry one `Idempotency-Key`, a reminder recorded
    /// as sent went to the notifier, and no reminder went more than once per kill beyond the
    /// first (the notifier accepts every call).
    fn check_notifications(
        &self,
        notifier: &FakeService,
        reminders: &Reminders,
        tally: &mut Tally,
    ) {
        let mut by_reminder: BTreeMap<(String, u64), Vec<Call>> = BTreeMap::new();
        for call in notifier.calls() {
            let id = call.body["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let index = call.body["reminder"].as_u64().unwrap();
            assert!(call.signature_ok, "notifier {id}: a bad signature");
            let key = (id, index);
            assert!(
                ["Reminded", "ReminderSent", "ReminderNotSent"]
                    .iter()
                    .any(|kind| reminders.contains_key(&(key.clone(), *kind))),
                "the notifier was told of reminder {index} of {}, which the log does not \
                 record; seed {}",
                key.0,
                self.seed
            );
            by_reminder.entry(key).or_default().push(call);
        }
        for ((id, index), calls) in &by_reminder {
            assert!(
                calls.len() <= 1 + self.kills,
                "reminder {index} of {id} went to the notifier {} times, more than once \
                 plus {} kills; seed {}",
                calls.len(),
                self.kills,
                self.seed
            );
            assert!(
                calls
                    .iter()
                    .all(|c| c.idempotency_key == calls[0].idempotency_key),
                "reminder {index} of {id}: calls under different keys"
            );
            tally.most_notifications = tally.most_notifications.max(calls.len());
        }
        for ((key, _), _) in reminders
            .iter()
            .filter(|((_, kind), _)| *kind == "ReminderSent")
        {
            assert!(
                by_reminder.contains_key(key),
                "reminder {} of {} is recorded as sent but never went to the notifier; seed {}",
                key.1,
                key.0,
                self.seed
            );
        }
        for ((_, kind), n) in reminders {
            *tally.reminder_events.entry(kind).or_default() += n;
        }
        tally.notifications = by_reminder.values().map(Vec::len).sum();
        assert!(tally.notifications > 0, "no reminder reached the notifier");
    }

    /// The reminder events in the log, counted by request, reminder and type.
    async fn reminders(&self) -> Reminders {
        let mut reminders = Reminders::new();
        for id in &self.ids {
            for event in self.events.read_stream(*id, 0).await.unwrap() {
                let kind = match event.event_type.as_str() {
                    "Reminded" => "Reminded",
                    "ReminderSent" => "ReminderSent",
                    "ReminderNotSent" => "ReminderNotSent",
                    _ => continue,
                };
                let index = event.payload["index"].as_u64().unwrap();
                *reminders
                    .entry(((id.to_string(), index), kind))
                    .or_default() += 1;
            }
        }
        reminders
    }

    /// Waits until every reminder has its outcome, when this version records outcomes: the
    /// last may be recorded after its request completed.
    async fn wait_reminders_settled(&self, server: &mut Server) {
        let expected = self.ids.len() * usize::try_from(self.reminder_count).unwrap();
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            server.assert_alive();
            let reminders = self.reminders().await;
            let settled: usize = reminders
                .iter()
                .filter(|((_, kind), _)| REMINDER_OUTCOMES.contains(kind))
                .map(|(_, n)| *n)
                .sum();
            if !records_reminder_outcomes(&reminders) || settled >= expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{settled} of {expected} reminders have an outcome after {COMMAND_DEADLINE:?}; \
                 seed {}\n{}",
                self.seed,
                server.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every result the 202 cleaner reported was answered, with 200 (recorded, or found to be
    /// a repeat of one recorded), once every call it took has been reported; returns what it
    /// did, for the run's summary.
    async fn check_reports(&self) -> String {
        let mut summary = Vec::new();
        for (name, cleaner) in &self.cleaners {
            let Cleaner::Reporting(service) = cleaner else {
                continue;
            };
            let deadline = Instant::now() + COMMAND_DEADLINE;
            while service.reports().len() < service.calls().len() {
                assert!(
                    Instant::now() < deadline,
                    "{name} did not report all its calls within {COMMAND_DEADLINE:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let reports = service.reports();
            for report in &reports {
                assert_eq!(
                    report.status,
                    Some(200),
                    "{name}'s report was not accepted: {report:?}; seed {}",
                    self.seed
                );
            }
            // The success in the log is one the cleaner reported, for the attempt it named.
            let succeeded: BTreeSet<(String, u64)> = reports
                .iter()
                .filter(|r| r.succeeded)
                .map(|r| (r.request_id.clone(), r.attempt))
                .collect();
            for id in &self.ids {
                let events = self.events.read_stream(*id, 0).await.unwrap();
                let recorded = events
                    .iter()
                    .find(|e| e.event_type == "CleanerSucceeded" && e.payload["cleaner"] == *name)
                    .map(|e| e.payload["attempt"].as_u64().unwrap())
                    .unwrap();
                assert!(
                    succeeded.contains(&(id.to_string(), recorded)),
                    "{id}: {name}'s success of attempt {recorded} was never reported; seed {}",
                    self.seed
                );
            }
            let failed = reports.iter().filter(|r| !r.succeeded).count();
            let unanswered: usize = reports.iter().map(|r| r.unanswered).sum();
            summary.push(format!(
                "{name} reported {} results ({failed} failures) after {unanswered} tries \
                 without an answer",
                reports.len()
            ));
        }
        summary.join(", ")
    }

    /// `lethe verify` on the workload's database exits 0 and names every request. Run again
    /// (within a deadline) while it reports nothing but what a lagging global read explains:
    /// a transaction left open elsewhere in the cluster hides newer events for a moment.
    async fn verify(&self) {
        let url = self.store.database_url();
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            let output = timeout(
                COMMAND_DEADLINE,
                lethe(self.dir.path(), &self.key_file)
                    .args(["verify", "--database-url", &url])
                    .output(),
            )
            .await
            .expect("lethe verify finishes")
            .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if output.status.success() {
                assert!(
                    stdout.starts_with(&format!("ok: {} requests", self.ids.len())),
                    "{stdout}{stderr}"
                );
                return;
            }
            let lagging = stdout
                .lines()
                .filter(|line| line.starts_with("FAILED"))
                .all(|line| line.contains("the stream's head records version"));
            assert!(
                lagging && Instant::now() < deadline,
                "lethe verify failed with {}:\n{stdout}{stderr}",
                output.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn count(events: &[RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

fn random_run(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.random_range(300..=1500))
}

/// One process, SIGKILLed at random moments and restarted; the last one finishes the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_process_survives_repeated_sigkill() {
    for seed in seeds::seeds() {
        single_process_survives_repeated_sigkill_on(seed, support::postgres().await, "postgres")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_process_survives_repeated_sigkill_on_sqlite() {
    for seed in seeds::seeds() {
        single_process_survives_repeated_sigkill_on(seed, support::sqlite().await, "sqlite").await;
    }
}

async fn single_process_survives_repeated_sigkill_on(seed: u64, store: TestStore, backend: &str) {
    let _turn = turn(&store, &format!("single process on {backend}"), seed).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut workload = Workload::new(seed, store, Setup::PLAIN).await;
    workload.submit(REQUESTS).await;

    let started = Instant::now();
    let mut server = Server::start(&workload, "lethe-1").await;
    let mut completed_at_kills = Vec::new();
    for kill in 1..=KILLS {
        tokio::time::sleep(random_run(&mut rng)).await;
        workload.kill(server).await;
        completed_at_kills.push(workload.completed_events().await);
        server = Server::start(&workload, &format!("lethe-{}", kill + 1)).await;
    }
    let ids = workload.ids.clone();
    workload
        .wait_completed(&ids, &mut [&mut server], COMPLETION_DEADLINE)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    // Not counted: nothing is left to do.
    server.kill().await;

    let tally = workload.check().await;
    assert!(tally.failures > 0, "the flaky cleaner failed some calls");
    workload.verify().await;
    eprintln!(
        "single process on {backend}: {KILLS} SIGKILLs (requests completed at each: {completed_at_kills:?}), \
         {} cleaner calls, {} beyond one per request and cleaner ({} failures retried, \
         {} repeated attempts, at most {} repeats of one cleaner for one request), \
         all {REQUESTS} completed after {seconds:.1} s (seed {seed})",
        tally.calls, tally.extra_calls, tally.failures, tally.repeated_attempts, tally.most_repeats
    );
}

/// Two processes on one database, each SIGKILLed now and then and restarted. Then each in
/// turn is kept down while a fresh batch of requests arrives, which the other must complete
/// alone: so both really do work, and either carries on when the other dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_work_and_survive_kills() {
    for seed in seeds::seeds() {
        two_processes_share_the_work_and_survive_kills_with(seed).await;
    }
}

async fn two_processes_share_the_work_and_survive_kills_with(seed: u64) {
    let store = support::postgres().await;
    let _turn = turn(&store, "two processes on postgres", seed).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut workload = Workload::new(seed, store, Setup::PLAIN).await;
    let solo_batch = 20;
    workload.submit(REQUESTS - 2 * solo_batch).await;

    let names = ["a", "b"];
    let mut generations = [1, 1];
    let started = Instant::now();
    let mut servers = [
        Some(Server::start(&workload, "lethe-a1").await),
        Some(Server::start(&workload, "lethe-b1").await),
    ];
    // Kills of either process at random moments while the work goes on, each restarted at
    // once.
    let mut completed_at_kills = Vec::new();
    while workload.kills < KILLS - 2 {
        tokio::time::sleep(random_run(&mut rng)).await;
        let victim = rng.random_range(0..2);
        workload.kill(servers[victim].take().unwrap()).await;
        completed_at_kills.push(workload.completed_events().await);
        generations[victim] += 1;
        let name = format!("lethe-{}{}", names[victim], generations[victim]);
        servers[victim] = Some(Server::start(&workload, &name).await);
    }
    // Then solo windows: A down while B alone completes fresh requests, then the other way
    // round.
    let mut solo = Vec::new();
    for victim in 0..2 {
        tokio::time::sleep(random_run(&mut rng)).await;
        workload.kill(servers[victim].take().unwrap()).await;
        completed_at_kills.push(workload.completed_events().await);
        let fresh = workload.submit(solo_batch).await;
        let window = Instant::now();
        let survivor = servers[1 - victim].as_mut().unwrap();
        workload
            .wait_completed(&fresh, &mut [survivor], SOLO_DEADLINE)
            .await;
        solo.push(format!(
            "{} alone completed {solo_batch} fresh requests in {:.1} s",
            names[1 - victim],
            window.elapsed().as_secs_f64()
        ));
        generations[victim] += 1;
        let name = format!("lethe-{}{}", names[victim], generations[victim]);
        servers[victim] = Some(Server::start(&workload, &name).await);
    }
    let ids = workload.ids.clone();
    {
        let mut running: Vec<&mut Server> = servers.iter_mut().flatten().collect();
        workload
            .wait_completed(&ids, &mut running, COMPLETION_DEADLINE)
            .await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let kills = workload.kills;
    for server in servers.iter_mut().filter_map(Option::take) {
        server.kill().await;
    }

    let tally = workload.check().await;
    assert!(tally.failures > 0, "the flaky cleaner failed some calls");
    workload.verify().await;
    eprintln!(
        "two processes: {kills} SIGKILLs (requests completed at each: {completed_at_kills:?}; \
         {}), {} cleaner calls, {} beyond one per request and cleaner \
         ({} failures retried, {} repeated attempts, at most {} repeats of one cleaner for \
         one request), all {REQUESTS} completed after {seconds:.1} s (seed {seed})",
        solo.join(", "),
        tally.calls,
        tally.extra_calls,
        tally.failures,
        tally.repeated_attempts,
        tally.most_repeats
    );
}

/// Single submissions and bulk lines in the HTTP scenario.
const SINGLES: usize = 50;
const BULK_LINES: usize = 50;
const BULK_CHUNK: usize = 10;
/// SIGKILLs in each run of the HTTP scenario.
const HTTP_KILLS: usize = 6;

/// Requests arrive over HTTP, one by one (two clients) and in bulk (one client), through a
/// gateway, while the single `lethe serve` behind it is SIGKILLed and restarted; reminders fall
/// due and go to a notifier; the cleaner [`BATCH`] answers 202 and reports later through the
/// gateway, retrying while nothing answers. Beyond [`Workload::check`]: every submission is
/// answered 2xx in the end, every answer to it names the same request, no submission makes a
/// second request, and each sent once more afterwards is answered 200 with its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_intake_reminders_and_callbacks_survive_sigkill() {
    for seed in seeds::seeds() {
        http_intake_survives_sigkill_on(seed, support::postgres().await, "postgres").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_intake_reminders_and_callbacks_survive_sigkill_on_sqlite() {
    for seed in seeds::seeds() {
        http_intake_survives_sigkill_on(seed, support::sqlite().await, "sqlite").await;
    }
}

async fn http_intake_survives_sigkill_on(seed: u64, store: TestStore, backend: &str) {
    let _turn = turn(&store, &format!("http intake on {backend}"), seed).await;
    let mut rng = StdRng::seed_from_u64(seed);
    // The reminder falls due 1 s after receipt, the request 1 s later.
    let setup = Setup {
        grace_period: "\"2s\"",
        reminders: "[\"1s\"]",
        notifier: true,
        batch_cleaner: true,
        ..Setup::PLAIN
    };
    let mut workload = Workload::new(seed, store, setup).await;
    let base = workload.gateway.url.clone();
    let singles: Vec<usize> = (0..SINGLES).collect();
    let lines: Vec<usize> = (SINGLES..SINGLES + BULK_LINES).collect();

    let started = Instant::now();
    let mut server = Server::start(&workload, "lethe-1").await;
    // Spread over the first kills: about 3 s of single submissions and of bulk calls.
    let single_intake = tokio::spawn(intake::singles(
        base.clone(),
        singles.clone(),
        2,
        Duration::from_millis(120),
    ));
    let bulk_intake = tokio::spawn(intake::bulk(
        base.clone(),
        lines.clone(),
        BULK_CHUNK,
        Duration::from_millis(600),
    ));
    // Kills at random moments of the intake, then (as the intake may run on) once reminders
    // go out, and twice once results are being reported: each after a random pause from
    // the moment its phase began.
    let mut at_kills: Vec<Progress> = Vec::new();
    for kill in 1..=HTTP_KILLS {
        // The phase: what must have happened at least (notifier calls, results reported).
        let (what, notified, reported) = match kill {
            1..=3 => ("the intake", 0, 0),
            4 => ("reminders going out", 1, 0),
            5 => ("results reported", 0, 1),
            _ => (
                "more results reported",
                0,
                at_kills.last().map_or(0, |p| p.reported) + 1,
            ),
        };
        workload
            .wait_for(&mut server, what, |p| {
                p.notified >= notified && p.reported >= reported
            })
            .await;
        let pause = if kill <= 3 {
            random_run(&mut rng)
        } else {
            Duration::from_millis(rng.random_range(0..=300))
        };
        tokio::time::sleep(pause).await;
        at_kills.push(workload.progress().await);
        workload.kill(server).await;
        server = Server::start(&workload, &format!("lethe-{}", kill + 1)).await;
    }
    let mut answers = timeout(COMPLETION_DEADLINE, single_intake)
        .await
        .expect("the single submissions end")
        .unwrap();
    answers.extend(
        timeout(COMPLETION_DEADLINE, bulk_intake)
            .await
            .expect("the bulk submissions end")
            .unwrap(),
    );
    let unanswered: usize = answers.values().map(|a| a.unanswered).sum();
    let retried = answers.values().filter(|a| a.unanswered > 0).count();
    // Whether a kill lands on a submission in flight depends on scheduling, which this test
    // does not control; a run whose kills missed the intake still checks everything below,
    // so it is reported rather than failed.
    if retried == 0 {
        eprintln!("note: no submission went unanswered: the kills missed the intake (seed {seed})");
    }
    let requests = answered_requests(&answers, SINGLES + BULK_LINES, seed);
    workload.ids = requests.values().copied().collect();
    let streams = workload
        .store
        .fetch_integers("SELECT COUNT(*) FROM streams")
        .await[0];
    assert_eq!(
        usize::try_from(streams).unwrap(),
        SINGLES + BULK_LINES,
        "one request per submission, none lost, none made twice (seed {seed})"
    );

    let ids = workload.ids.clone();
    workload
        .wait_completed(&ids, &mut [&mut server], COMPLETION_DEADLINE)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    // Every submission once more, as a client that never saw its answer would: the same
    // request, found (200), not made again.
    let mut again = intake::singles(base.clone(), singles, 4, Duration::ZERO).await;
    again.extend(intake::bulk(base, lines, BULK_LINES, Duration::ZERO).await);
    for (index, answers) in &again {
        assert_eq!(
            answers.statuses,
            [200],
            "submission {index} again: {answers:?}"
        );
        assert_eq!(
            answers.ids,
            [requests[index].to_string()],
            "submission {index} again names another request"
        );
    }
    let streams = workload
        .store
        .fetch_integers("SELECT COUNT(*) FROM streams")
        .await[0];
    assert_eq!(usize::try_from(streams).unwrap(), SINGLES + BULK_LINES);
    workload.wait_reminders_settled(&mut server).await;
    server.kill().await;

    let tally = workload.check().await;
    let reports = workload.check_reports().await;
    let last = workload.progress().await;
    // Each kill waited for its phase to begin; whether the phase was still going on when it
    // landed depends on scheduling, so a miss is reported, not failed (the checks above hold
    // either way).
    if !at_kills
        .iter()
        .any(|p| 0 < p.notified && p.notified < last.notified)
    {
        eprintln!("note: no kill while reminders went out: {at_kills:?} (seed {seed})");
    }
    if !at_kills
        .iter()
        .any(|p| 0 < p.reported && p.reported < last.reported)
    {
        eprintln!("note: no kill while results were reported: {at_kills:?} (seed {seed})");
    }
    workload.verify().await;
    eprintln!(
        "http intake on {backend}: {HTTP_KILLS} SIGKILLs (at each: {at_kills:?}), {retried} submissions retried after {unanswered} tries \
         without an answer, {} notifier calls (at most {} for one reminder; in the log: \
         {:?}), {} cleaner calls, {} beyond one per request and cleaner ({} failures retried, {} repeated \
         attempts, at most {} repeats of one cleaner for one request), {reports}, all {} \
         completed after {seconds:.1} s (seed {seed})",
        tally.notifications,
        tally.most_notifications,
        tally.reminder_events,
        tally.calls,
        tally.extra_calls,
        tally.failures,
        tally.repeated_attempts,
        tally.most_repeats,
        SINGLES + BULK_LINES
    );
}

/// The request each submission was answered with, by index: every submission was answered
/// 2xx at least once, every answer to it named the same request, and no two submissions (each
/// for a subject of its own) share a request.
fn answered_requests(
    answers: &BTreeMap<usize, intake::Answers>,
    submissions: usize,
    seed: u64,
) -> BTreeMap<usize, RequestId> {
    assert_eq!(answers.len(), submissions, "every submission was made");
    let mut requests = BTreeMap::new();
    for (index, answered) in answers {
        assert!(
            !answered.ids.is_empty()
                && answered.ids.len() == answered.statuses.len()
                && answered.ids.iter().all(|id| *id == answered.ids[0]),
            "submission {index}: every answer names one request: {answered:?} (seed {seed})"
        );
        assert!(
            answered.statuses.iter().all(|s| [200, 201].contains(s)),
            "submission {index}: {answered:?} (seed {seed})"
        );
        requests.insert(*index, answered.ids[0].parse::<RequestId>().unwrap());
    }
    let distinct: BTreeSet<RequestId> = requests.values().copied().collect();
    assert_eq!(distinct.len(), submissions, "a request per submission");
    requests
}

/// Requests in each run of the Kafka scenario.
const KAFKA_REQUESTS: usize = 60;

/// The Kafka broker (tansu, a real process) is SIGKILLed with messages in flight: once the
/// Kafka cleaner [`SEARCH`] has answered a random share of the requests, with Due messages
/// published and not yet read, and results sent and not yet recorded. `lethe serve` is
/// SIGKILLed while the broker is down, and restarted. tansu keeps its topics in memory, so the
/// broker comes back empty: what it had acknowledged is gone, and only Lethe's callback
/// timeout (an attempt without a result fails and is made again, published anew) can bring
/// those requests to an end. Every request completes, with [`Workload::check`]'s invariants;
/// the Kafka cleaner's bound counts the broker's kill as a kill (the relay may publish a batch
/// again after a failed round).
///
/// Needs tansu: skipped, saying so, when `LETHE_TANSU_BIN` is unset (`scripts/test.sh` sets
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_with_messages_in_flight_loses_no_request() {
    if std::env::var_os("LETHE_TANSU_BIN").is_none() {
        eprintln!(
            "SKIPPED a_broker_killed_with_messages_in_flight_loses_no_request: LETHE_TANSU_BIN \
             is unset. Run it with LETHE_TANSU_BIN=$(scripts/tansu.sh), which installs the \
             Kafka-compatible broker tansu {} once (scripts/test.sh does).",
            tansu::VERSION
        );
        return;
    }
    for seed in seeds::seeds() {
        a_broker_killed_with_messages_in_flight_with(seed).await;
    }
}

async fn a_broker_killed_with_messages_in_flight_with(seed: u64) {
    // On SQLite, to share the machine evenly with the Postgres runs.
    let store = support::sqlite().await;
    let _turn = turn(&store, "kafka broker killed", seed).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut broker = tansu::Tansu::start().await;
    broker.create_topics(&KAFKA_TOPICS, 1).await;
    let setup = Setup {
        kafka: Some(broker.brokers()),
        ..Setup::PLAIN
    };
    let mut workload = Workload::new(seed, store, setup).await;
    workload.submit(KAFKA_REQUESTS).await;
    let Some(Cleaner::Reading(search)) = workload.cleaners.last().map(|(_, c)| c) else {
        unreachable!("the Kafka cleaner comes last")
    };

    let started = Instant::now();
    let mut server = Server::start(&workload, "lethe-1").await;
    let share = rng.random_range(KAFKA_REQUESTS / 6..=KAFKA_REQUESTS / 2);
    let deadline = Instant::now() + COMPLETION_DEADLINE;
    while search.handled().len() < share {
        server.assert_alive();
        assert!(
            Instant::now() < deadline,
            "the Kafka cleaner handled {} of {share} requests within {COMPLETION_DEADLINE:?} \
             (seed {seed})\n{}{}",
            search.handled().len(),
            server.tail(),
            broker.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_flight = workload.kafka_in_flight().await;
    // The cleaner answers the message in hand and leaves its group (see
    // `support/kafka_cleaner.rs`); what the broker holds then dies with it.
    workload.kafka_cleaner().stop().await;
    broker.stop();
    workload.broker_kills += 1;
    let down = Instant::now();
    tokio::time::sleep(random_run(&mut rng)).await;
    workload.kill(server).await;
    server = Server::start(&workload, "lethe-2").await;
    tokio::time::sleep(random_run(&mut rng)).await;
    broker.restart().await;
    broker.create_topics(&KAFKA_TOPICS, 1).await;
    workload.kafka_cleaner().resume();
    let outage = down.elapsed().as_secs_f64();

    let ids = workload.ids.clone();
    workload
        .wait_completed(&ids, &mut [&mut server], COMPLETION_DEADLINE)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    server.kill().await;
    assert!(
        in_flight.published > in_flight.recorded,
        "the broker was killed with nothing in flight: {in_flight:?} (seed {seed})"
    );

    let tally = workload.check().await;
    let search_failures = workload.failures_of(SEARCH).await;
    workload.verify().await;
    eprintln!(
        "kafka broker killed with {in_flight:?}, down {outage:.1} s, and {} SIGKILLs of \
         lethe: {} cleaner calls and messages, {} beyond one per request and cleaner ({} \
         failures retried, {search_failures} of them {SEARCH}'s, {} repeated attempts, at most \
         {} repeats of one cleaner for one request), all {KAFKA_REQUESTS} completed after \
         {seconds:.1} s (seed {seed})",
        workload.kills,
        tally.calls,
        tally.extra_calls,
        tally.failures,
        tally.repeated_attempts,
        tally.most_repeats
    );
}

/// Where the Kafka messages were when the broker died.
struct InFlight {
    /// Due events the relay had published (its checkpoint), Due messages the Kafka cleaner
    /// had read, and its results recorded in the log.
    published: usize,
    read: usize,
    recorded: usize,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} Due published, {} read by {SEARCH}, {} of its results recorded",
            self.published, self.read, self.recorded
        )
    }
}

impl Workload {
    async fn kafka_in_flight(&self) -> InFlight {
        let checkpoint = self
            .workflow
            .subscription_checkpoint(lethe_engine::kafka::RELAY)
            .await
            .unwrap()
            .map_or(0, |c| c.position);
        let count = |sql: String| async move {
            usize::try_from(self.store.fetch_integers(&sql).await[0]).unwrap()
        };
        let read = match self.cleaners.last() {
            Some((_, Cleaner::Reading(search))) => search.handled().len(),
            _ => 0,
        };
        InFlight {
            published: count(format!(
                "SELECT COUNT(*) FROM events WHERE event_type = 'Due' AND position <= {checkpoint}"
            ))
            .await,
            read,
            recorded: count(format!(
                "SELECT COUNT(*) FROM events WHERE event_type = 'CleanerSucceeded' \
                 AND actor = 'cleaner:{SEARCH}'"
            ))
            .await,
        }
    }

    /// The Kafka cleaner of the workload.
    fn kafka_cleaner(&mut self) -> &mut KafkaCleaner {
        match self.cleaners.last_mut() {
            Some((_, Cleaner::Reading(search))) => search,
            _ => panic!("the workload has no Kafka cleaner"),
        }
    }

    /// How many `CleanerFailed` events of `cleaner` the log holds.
    async fn failures_of(&self, cleaner: &str) -> usize {
        let mut failures = 0;
        for id in &self.ids {
            let events = self.events.read_stream(*id, 0).await.unwrap();
            failures += events
                .iter()
                .filter(|e| e.event_type == "CleanerFailed" && e.payload["cleaner"] == cleaner)
                .count();
        }
        failures
    }
}

/// The saga, counting the events it handles and the job changes it decides.
struct Counting {
    saga: Saga,
    handled: Mutex<Vec<i64>>,
    changes: AtomicUsize,
}

impl Counting {
    fn new(saga: &Saga) -> Self {
        Self {
            saga: saga.clone(),
            handled: Mutex::new(Vec::new()),
            changes: AtomicUsize::new(0),
        }
    }

    /// The positions of the events handled so far, in order.
    fn handled(&self) -> Vec<i64> {
        self.handled.lock().unwrap().clone()
    }

    fn changes(&self) -> usize {
        self.changes.load(Ordering::SeqCst)
    }
}

impl Subscriber for Counting {
    type Write = JobChange;

    fn name(&self) -> &'static str {
        self.saga.name()
    }

    fn handle(&self, event: &RecordedEvent) -> Result<Vec<JobChange>, StoreError> {
        let changes = self.saga.handle(event)?;
        self.handled.lock().unwrap().push(event.position);
        self.changes.fetch_add(changes.len(), Ordering::SeqCst);
        Ok(changes)
    }
}

/// The whole log, once at least `n` events are visible to a global read (on Postgres a
/// transaction open elsewhere in the cluster holds newer events back for a moment).
async fn read_log(events: &dyn EventStore, n: usize) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = events.read_all(Checkpoint::START, 1000).await.unwrap();
        if log.len() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events became visible",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs rounds until `runner` has committed `n` events (at most 20 s); returns how many
/// rounds committed nothing on the way (owned elsewhere or not yet visible).
async fn drain(
    runner: &SubscriptionRunner,
    subscriber: &Writing<Counting, dyn WorkflowStore>,
    n: usize,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut committed, mut idle) = (0, 0);
    while committed < n {
        let handled = runner.round(subscriber).await.unwrap();
        committed += handled;
        if handled == 0 {
            idle += 1;
            assert!(
                Instant::now() < deadline,
                "{} committed {committed} of {n} events",
                runner.owner
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        committed, n,
        "{} committed more than expected",
        runner.owner
    );
    idle
}

async fn submit_requests(requests: &Requests, first: usize, n: usize) -> Vec<RequestId> {
    let mut ids = Vec::new();
    for index in first..first + n {
        let submission = Submission {
            subject: BTreeMap::from([("user_id".to_owned(), format!("fenced-{index}"))]),
            ..Submission::default()
        };
        ids.push(
            requests
                .submit(submission, None, "test")
                .await
                .unwrap()
                .loaded
                .request
                .id,
        );
    }
    ids
}

/// Owner A's lease runs out while it holds a decided batch; B takes the subscription over and
/// commits part of the log; A's late commit is refused and changes nothing. Then B, as a
/// running subscription, carries on from its checkpoint, dies without releasing, and a
/// restarted runner resumes exactly where B stopped.
async fn a_deposed_subscription_owner_cannot_commit(store: TestStore) {
    let (events, workflow) = store.stores();
    // One reminder and the end of the grace period: two jobs per `Received`.
    let config = Arc::new(
        Config::parse("[policy]\ngrace_period = \"1h\"\nreminders = [\"30m\"]\n").unwrap(),
    );
    let requests = Requests::new(events.clone(), config.clone());
    submit_requests(&requests, 0, 3).await;
    let log = read_log(&*events, 3).await;
    assert_eq!(log.len(), 3);
    let saga = Saga { config };
    let lease = Duration::from_secs(1);
    let jobs = |id: RequestId| {
        let workflow = workflow.clone();
        async move { workflow.jobs_of(id).await.unwrap().len() }
    };

    let t0 = Utc::now();
    let acquired = workflow
        .acquire_subscription(SAGA, "owner-a", lease, t0)
        .await
        .unwrap();
    assert_eq!(acquired, Some(Checkpoint::START));
    let half = chrono::TimeDelta::milliseconds(500);
    let refused = workflow
        .acquire_subscription(SAGA, "owner-b", lease, t0 + half)
        .await
        .unwrap();
    assert_eq!(refused, None, "B waits while A's lease runs");
    // A decides its batch, then stalls (a pause, a partition) past its lease.
    let a_changes: Vec<JobChange> = log
        .iter()
        .flat_map(|event| saga.handle(event).unwrap())
        .collect();
    assert_eq!(a_changes.len(), 6);

    // B takes over once A's lease ran out and commits the first event.
    let t1 = t0 + chrono::TimeDelta::seconds(2);
    let taken = workflow
        .acquire_subscription(SAGA, "owner-b", lease, t1)
        .await
        .unwrap();
    assert_eq!(taken, Some(Checkpoint::START));
    let b_changes = saga.handle(&log[0]).unwrap();
    assert!(workflow
        .commit_subscription(SAGA, "owner-b", log[0].checkpoint(), &b_changes)
        .await
        .unwrap());

    // A's late commit is refused and applies nothing; the checkpoint stays B's.
    let committed = workflow
        .commit_subscription(SAGA, "owner-a", log[2].checkpoint(), &a_changes)
        .await
        .unwrap();
    assert!(!committed, "a deposed owner's commit is refused");
    assert_eq!(
        workflow.subscription_checkpoint(SAGA).await.unwrap(),
        Some(log[0].checkpoint())
    );
    assert_eq!(jobs(log[0].stream_id).await, 2);
    assert_eq!(
        jobs(log[1].stream_id).await,
        0,
        "nothing of A's batch applied"
    );
    assert_eq!(
        jobs(log[2].stream_id).await,
        0,
        "nothing of A's batch applied"
    );
    // Nor can A take the subscription back while B's lease runs.
    let refused = workflow
        .acquire_subscription(SAGA, "owner-a", lease, t1 + half)
        .await
        .unwrap();
    assert_eq!(refused, None);

    // B runs on as a subscription runner: from its checkpoint, so only the two events after it.
    let runner = |owner: &str| SubscriptionRunner {
        events: events.clone(),
        subscriptions: workflow.clone(),
        owner: owner.to_owned(),
        lease: Duration::from_millis(300),
        poll_interval: Duration::from_millis(20),
    };
    let b = runner("owner-b");
    let b_saga = Writing {
        subscriber: Counting::new(&saga),
        sink: workflow.clone(),
    };
    drain(&b, &b_saga, 2).await;
    assert_eq!(
        b_saga.subscriber.handled(),
        [log[1].position, log[2].position]
    );
    assert_eq!(b_saga.subscriber.changes(), 4);
    for event in &log {
        assert_eq!(jobs(event.stream_id).await, 2);
    }
    assert_eq!(b.round(&b_saga).await.unwrap(), 0, "B is caught up");

    // B dies without giving the subscription up; more requests arrive; a restarted runner (a
    // new owner, a fresh subscriber) takes over once B's lease runs out and handles only them.
    drop(b);
    let fresh = submit_requests(&requests, 3, 2).await;
    let c = runner("owner-c");
    let c_saga = Writing {
        subscriber: Counting::new(&saga),
        sink: workflow.clone(),
    };
    drain(&c, &c_saga, 2).await;
    let mut expected = Vec::new();
    for id in &fresh {
        expected.push(events.read_stream(*id, 0).await.unwrap()[0].position);
    }
    let mut handled = c_saga.subscriber.handled();
    handled.sort_unstable();
    expected.sort_unstable();
    assert_eq!(handled, expected, "only the events after the checkpoint");
    assert_eq!(
        c_saga.subscriber.changes(),
        4,
        "two jobs for each fresh request, no more"
    );
    assert_eq!(c.round(&c_saga).await.unwrap(), 0, "C is caught up");
    assert_eq!(c_saga.subscriber.handled().len(), 2);
    let all = read_log(&*events, 5).await;
    assert_eq!(
        workflow.subscription_checkpoint(SAGA).await.unwrap(),
        Some(all.last().unwrap().checkpoint())
    );
    for id in log.iter().map(|e| e.stream_id).chain(fresh) {
        assert_eq!(jobs(id).await, 2, "{id}");
    }
    // And B, deposed in turn, can commit nothing.
    assert!(!workflow
        .commit_subscription(SAGA, "owner-b", Checkpoint::START, &[])
        .await
        .unwrap());
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deposed_subscription_owner_cannot_commit() {
        super::a_deposed_subscription_owner_cannot_commit(super::support::postgres().await).await;
    }
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deposed_subscription_owner_cannot_commit() {
        super::a_deposed_subscription_owner_cannot_commit(super::support::sqlite().await).await;
    }
}
