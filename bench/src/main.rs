//! Lethe's benchmarks: each scenario starts what it needs on 127.0.0.1, is bounded
//! in time, prints one line per figure, and measures on the same database, in the same run,
//! the raw baseline — plain single-row `INSERT` transactions into a table of the same shape as
//! `events`, at the same concurrency — so that every figure comes with its ratio.
//!
//! ```sh
//! cargo run --release -p lethe-bench -- all --backend both
//! cargo run --release -p lethe-bench -- ingest --backend postgres --seconds 10
//! ```
//!
//! See `docs/PERFORMANCE.md` for the figures and how to read them.

mod cpu;
mod db;
mod load;
mod peer;
mod scenarios;
mod services;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use db::{Backend, Db};

/// The allocator `lethe` runs with, so that in-process figures match the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Requests submitted over HTTP at concurrency 1, 8, 32, 64, beside the peer (esrs).
    Ingest,
    /// Requests submitted through the application service in-process, beside the peer (esrs).
    Append,
    /// N requests (default 100,000) in one POST /v1/requests:bulk.
    Bulk,
    /// N requests x 5 loopback cleaners (one 10 % flaky), from Due to Completed.
    Lifecycle,
    /// N requests erased from Postgres by two built-in `sql` cleaners, without and with batches.
    LifecycleSql,
    /// Every projection rebuilt from a log of --events events.
    Rebuild,
    /// GET /v1/requests/{id}/history for random requests in a large log.
    Replay,
    /// Peak RSS of `lethe serve` during a lifecycle-like workload.
    Memory,
    /// Stats, dashboard, each list filter and a history, timed at each of --scale-requests.
    Scale,
    /// Every scenario above, in this order.
    All,
    /// Instructions per operation under valgrind's callgrind (append, ingest, the peer, the raw
    /// insert), each the difference of two runs; not in `all` (it takes minutes).
    Instructions,
    /// `--ops` operations of one kind, one at a time: what `instructions` runs under callgrind.
    #[value(hide = true)]
    Ops,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    Postgres,
    Sqlite,
    Both,
}

#[derive(Debug, Parser)]
#[command(
    name = "lethe-bench",
    about = "Lethe's benchmarks, each beside the raw one-row-per-transaction insert rate of the same database"
)]
struct Cli {
    scenario: Scenario,
    /// Which event store to measure.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
    /// Measured seconds per load level (ingest), per read run (replay) and per baseline
    /// (default 5; 1 with --smoke).
    #[arg(long)]
    seconds: Option<f64>,
    /// A run of seconds that proves every scenario works (small sizes; fails on any error).
    #[arg(long)]
    smoke: bool,
    /// Requests of the lifecycle and memory scenarios (default 20,000; 200 with --smoke).
    #[arg(long)]
    requests: Option<u64>,
    /// Lines of the bulk request (default 100,000; 1,000 with --smoke).
    #[arg(long)]
    bulk_requests: Option<u64>,
    /// Events in the replay and rebuild logs (default 200,000; 2,000 with --smoke; the target in
    /// docs/PERFORMANCE.md is for 1,000,000).
    #[arg(long)]
    events: Option<u64>,
    /// The sizes of the scale scenario, loaded one after another (default 100000,1000000;
    /// 200,1000 with --smoke).
    #[arg(long, value_delimiter = ',')]
    scale_requests: Option<Vec<u64>>,
    /// Upper bound in seconds for each long phase (submitting, completing, filling) of a
    /// scenario (default 600; 60 with --smoke).
    #[arg(long)]
    time_limit: Option<u64>,
    /// `[engine] dispatch_concurrency` of the lifecycle and memory scenarios (default: the
    /// engine's default, 16).
    #[arg(long)]
    dispatch_concurrency: Option<u32>,
    /// The `lethe` binary for the memory scenario (default: beside this one, else
    /// target/release/lethe, built when missing).
    #[arg(long)]
    lethe_bin: Option<PathBuf>,
    /// The Postgres server; each run makes (and drops) a schema of its own in it.
    #[arg(
        long,
        env = "LETHE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The operation of `ops`.
    #[arg(long, value_enum, hide = true, default_value_t = scenarios::Operation::Append)]
    operation: scenarios::Operation,
    /// How many operations `ops` makes after its warm-up.
    #[arg(long, hide = true, default_value_t = 100)]
    ops: u64,
}

/// What every scenario is run with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub postgres_url: String,
    pub seconds: Duration,
    pub smoke: bool,
    pub requests: u64,
    pub bulk_requests: u64,
    pub events: u64,
    pub time_limit: Duration,
    pub lethe_bin: Option<PathBuf>,
    pub dispatch_concurrency: u32,
    /// Ascending.
    pub scale_requests: Vec<u64>,
    /// `ops`: what to do, and how many times.
    pub operation: scenarios::Operation,
    pub ops: u64,
}

/// Conditions a run must meet. In a smoke run a broken one fails the run; otherwise it is a
/// warning beside the figures (a benchmark that hits a limit still reports what it measured).
#[derive(Debug, Default)]
pub struct Checks {
    strict: bool,
    failures: Vec<String>,
}

impl Checks {
    pub fn expect(&mut self, ok: bool, what: String) {
        if ok {
            return;
        }
        eprintln!("{}: {what}", if self.strict { "FAILED" } else { "warning" });
        if self.strict {
            self.failures.push(what);
        }
    }

    fn fail(&mut self, what: String) {
        eprintln!("FAILED: {what}");
        self.failures.push(what);
    }
}

impl Cli {
    fn settings(&self) -> anyhow::Result<Settings> {
        let seconds = self.seconds.unwrap_or(if self.smoke { 1.0 } else { 5.0 });
        if !(seconds > 0.0 && seconds <= 3600.0) {
            anyhow::bail!("--seconds must be between 0 and 3600");
        }
        let requests = self
            .requests
            .unwrap_or(if self.smoke { 200 } else { 20_000 });
        let events = self
            .events
            .unwrap_or(if self.smoke { 2_000 } else { 200_000 });
        let bulk_requests = self
            .bulk_requests
            .unwrap_or(if self.smoke { 1_000 } else { 100_000 });
        if requests == 0 || events == 0 || bulk_requests == 0 {
            anyhow::bail!("--requests, --bulk-requests and --events must be at least 1");
        }
        let mut scale_requests = self.scale_requests.clone().unwrap_or_else(|| {
            if self.smoke {
                vec![200, 1_000]
            } else {
                vec![100_000, 1_000_000]
            }
        });
        scale_requests.sort_unstable();
        if scale_requests.first().is_none_or(|n| *n == 0) {
            anyhow::bail!("--scale-requests must list sizes of at least 1");
        }
        let time_limit = self
            .time_limit
            .unwrap_or(if self.smoke { 60 } else { 600 })
            .clamp(1, 24 * 3600);
        Ok(Settings {
            postgres_url: self.postgres_url.clone(),
            seconds: Duration::from_secs_f64(seconds),
            smoke: self.smoke,
            requests,
            bulk_requests,
            events,
            time_limit: Duration::from_secs(time_limit),
            lethe_bin: self.lethe_bin.clone(),
            dispatch_concurrency: self
                .dispatch_concurrency
                .unwrap_or_else(|| {
                    lethe_engine::config::EngineConfig::default().dispatch_concurrency
                })
                .max(1),
            scale_requests,
            operation: self.operation,
            ops: self.ops,
        })
    }

    fn backends(&self) -> Vec<Backend> {
        match self.backend {
            BackendChoice::Postgres => vec![Backend::Postgres],
            BackendChoice::Sqlite => vec![Backend::Sqlite],
            BackendChoice::Both => vec![Backend::Postgres, Backend::Sqlite],
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let backends = cli.backends();
    let mut checks = Checks {
        strict: settings.smoke,
        failures: Vec::new(),
    };
    print_machine(&settings, &backends).await;

    let scenarios = match cli.scenario {
        Scenario::All => vec![
            Scenario::Ingest,
            Scenario::Append,
            Scenario::Bulk,
            Scenario::Lifecycle,
            Scenario::LifecycleSql,
            Scenario::Rebuild,
            Scenario::Replay,
            Scenario::Memory,
            Scenario::Scale,
        ],
        one => vec![one],
    };
    for scenario in scenarios {
        for &backend in &backends {
            run_one(scenario, backend, &settings, &mut checks).await;
        }
    }

    if checks.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("{} check(s) failed:", checks.failures.len());
        for failure in &checks.failures {
            eprintln!("  - {failure}");
        }
        ExitCode::FAILURE
    }
}

async fn run_one(scenario: Scenario, backend: Backend, settings: &Settings, checks: &mut Checks) {
    let name = format!("{scenario:?}").to_lowercase();
    let started = std::time::Instant::now();
    let db = match Db::create(backend, &settings.postgres_url).await {
        Ok(db) => db,
        Err(e) => {
            checks.fail(format!("{name} {backend}: {e:#}"));
            return;
        }
    };
    let result = match scenario {
        Scenario::Ingest => scenarios::ingest(&db, settings, checks).await,
        Scenario::Append => scenarios::append(&db, settings, checks).await,
        Scenario::Lifecycle => scenarios::lifecycle(&db, settings, checks).await,
        Scenario::LifecycleSql => scenarios::lifecycle_sql(&db, settings, checks).await,
        Scenario::Replay => scenarios::replay(&db, settings, checks).await,
        Scenario::Memory => scenarios::memory(&db, settings, checks).await,
        Scenario::Bulk => scenarios::bulk(&db, settings, checks).await,
        Scenario::Rebuild => scenarios::rebuild(&db, settings, checks).await,
        Scenario::Scale => scenarios::scale(&db, settings, checks).await,
        Scenario::Instructions => scenarios::instructions(&db, settings, checks).await,
        Scenario::Ops => scenarios::ops(&db, settings.operation, settings.ops).await,
        Scenario::All => Ok(()),
    };
    if let Err(e) = result {
        checks.fail(format!("{name} {backend}: {e:#}"));
    }
    if let Err(e) = db.destroy().await {
        checks.fail(format!("{name} {backend}: cleaning up: {e:#}"));
    }
    println!(
        "# {name} {backend} took {:.1} s; loadavg {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}

/// One line about the machine and the code: figures from a shared box vary, so they travel
/// with what they were measured on.
async fn print_machine(settings: &Settings, backends: &[Backend]) {
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_mb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024);
    let loadavg = loadavg();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let postgres = if backends.contains(&Backend::Postgres) {
        match db::postgres_version(&settings.postgres_url).await {
            Ok(v) => v.split(" on ").next().unwrap_or(&v).to_owned(),
            Err(e) => format!("unreachable ({e:#})"),
        }
    } else {
        "not used".to_owned()
    };
    println!(
        "machine nproc={nproc} mem_total_mb={mem_total_mb} loadavg={loadavg} cpu=\"{cpu}\" \
         postgres=\"{postgres}\" postgres_url={} sqlite=\"{}\" git={} date={} smoke={}",
        db::redact(&settings.postgres_url),
        sqlite_version().await,
        git_commit(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        settings.smoke,
    );
    println!(
        "settings seconds={} requests={} bulk_requests={} events={} time_limit_s={} \
         dispatch_concurrency={} baseline_payload_bytes={}",
        settings.seconds.as_secs_f64(),
        settings.requests,
        settings.bulk_requests,
        settings.events,
        settings.time_limit.as_secs(),
        settings.dispatch_concurrency,
        db::received_payload_bytes(),
    );
}

/// The 1, 5 and 15 minute load averages: the machine is shared, and this says how busy.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let parts: Vec<&str> = l.split_whitespace().take(3).collect();
            (parts.len() == 3).then(|| parts.join(","))
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// The linked SQLite library's version (sqlx bundles it).
async fn sqlite_version() -> String {
    let version = async {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.ok()?;
        let v: Option<String> = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&pool)
            .await
            .ok();
        pool.close().await;
        v
    };
    version.await.unwrap_or_else(|| "?".to_owned())
}

/// The commit of the source tree, `-dirty` when it had changes to tracked files
/// (`LETHE_BENCH_COMMIT` names it for a tree outside a git checkout).
fn git_commit() -> String {
    if let Ok(commit) = std::env::var("LETHE_BENCH_COMMIT") {
        return commit;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{commit}{}", if dirty { "-dirty" } else { "" })
        }
        None => "unknown".to_owned(),
    }
}
