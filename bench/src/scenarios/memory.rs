//! The `memory` scenario.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::db::{CompletedCounter, Db};
use crate::load::per_second;
use crate::services::{
    http_client, lifecycle_config, start_cleaners, stop_cleaners, submit_many, MASTER_KEY,
};
use crate::{Checks, Settings};

use super::{ratio, run_tag, yes_no, SUBMIT_CONCURRENCY};

/// `memory`: `lethe serve` as a child process on the benchmark database, driven over HTTP
/// through a lifecycle-like workload; its peak RSS (VmHWM) is the figure.
pub async fn memory(db: &Db, settings: &Settings, checks: &mut Checks) -> anyhow::Result<()> {
    let backend = db.backend;
    let scenario_deadline = Instant::now() + settings.time_limit;
    let binary = lethe_binary(settings).await?;
    let cleaners = start_cleaners().await?;
    let work = tempfile::Builder::new()
        .prefix("lethe-bench-serve-")
        .tempdir()?;
    let config_path = work.path().join("lethe.toml");
    std::fs::write(
        &config_path,
        lifecycle_config(&cleaners, settings.dispatch_concurrency),
    )?;
    let key_path = work.path().join("master.key");
    std::fs::write(
        &key_path,
        MASTER_KEY
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )?;
    let log_path = work.path().join("serve.log");
    let log = std::fs::File::create(&log_path)?;
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let base = format!("http://{listen}");
    let mut child = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(&config_path)
        .arg("--database-url")
        .arg(db.database_url())
        .arg("serve")
        .arg("--listen")
        .arg(listen.to_string())
        .env("LETHE_MASTER_KEY_FILE", &key_path)
        .env_remove("LETHE_DATABASE_URL")
        .env_remove("LETHE_LISTEN")
        .env_remove("LETHE_CONFIG")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("lethe serve exited at once"))?;

    let result = drive_child(
        db,
        settings,
        checks,
        &mut child,
        pid,
        &base,
        scenario_deadline,
    )
    .await;
    stop_child(&mut child, pid).await;
    stop_cleaners(cleaners).await;
    if result.is_err() {
        eprintln!(
            "memory {backend}: lethe serve's log ({}):\n{}",
            log_path.display(),
            tail(&log_path, 30)
        );
    }
    result
}

async fn drive_child(
    db: &Db,
    settings: &Settings,
    checks: &mut Checks,
    child: &mut tokio::process::Child,
    pid: u32,
    base: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let backend = db.backend;
    let client = http_client(SUBMIT_CONCURRENCY * 2)?;
    wait_until_ready(&client, base, child).await?;
    let idle = read_memory(pid)?;
    let start_position = db.head_position().await?;
    let started = Instant::now();
    let submitted = submit_many(
        &client,
        base,
        &format!("memory-{}", run_tag()),
        settings.requests,
        SUBMIT_CONCURRENCY,
        settings.time_limit,
    )
    .await;
    checks.expect(
        submitted.errors == 0 && submitted.ok == settings.requests,
        format!(
            "memory {backend}: submitted {} of {} ({} errors, first: {:?})",
            submitted.ok, settings.requests, submitted.errors, submitted.first_error
        ),
    );
    let expected = i64::try_from(submitted.ok)?;
    let poll = if settings.smoke {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(200)
    };
    let mut peak_rss_kb = idle.rss_kb;
    let mut counter = CompletedCounter::after(start_position);
    let completed = loop {
        let completed = db.count_completed(&mut counter).await?;
        if let Ok(now) = read_memory(pid) {
            peak_rss_kb = peak_rss_kb.max(now.rss_kb);
        }
        if completed >= expected || Instant::now() >= deadline {
            break completed;
        }
        if let Some(status) = child.try_wait()? {
            bail!("lethe serve exited during the workload: {status}");
        }
        tokio::time::sleep(poll).await;
    };
    let window = started.elapsed();
    let events = db.count_events_after(start_position).await?;
    let end = read_memory(pid)?;
    let baseline = db
        .baseline(SUBMIT_CONCURRENCY, settings.seconds, u64::MAX)
        .await?;
    let events_per_s = per_second(u64::try_from(events)?, window);
    let peak_mb = end.hwm_kb as f64 / 1024.0;
    let timed_out = completed < expected;
    println!(
        "memory {backend} requests={expected} completed={completed} seconds={:.1} \
         peak_rss_mb={peak_mb:.1} idle_rss_mb={:.1} sampled_peak_rss_mb={:.1} events={events} \
         events_per_s={events_per_s:.1} baseline_c={SUBMIT_CONCURRENCY} \
         baseline_rows_per_s={:.1} ratio={:.2}{}",
        window.as_secs_f64(),
        idle.rss_kb as f64 / 1024.0,
        peak_rss_kb as f64 / 1024.0,
        baseline.rate(),
        ratio(events_per_s, baseline.rate()),
        if timed_out {
            " timed_out=true (partial: the time limit was hit)"
        } else {
            ""
        }
    );
    println!(
        "memory {backend} target=\"peak_rss_mb<200\" peak_rss_mb={peak_mb:.1} met={}",
        yes_no(peak_mb < 200.0)
    );
    checks.expect(
        !timed_out,
        format!("memory {backend}: {completed} of {expected} completed within the time limit"),
    );
    Ok(())
}

async fn wait_until_ready(
    client: &reqwest::Client,
    base: &str,
    child: &mut tokio::process::Child,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("lethe serve exited before it was ready: {status}");
        }
        let ready = client
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("lethe serve was not ready on {base} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM (a graceful stop), then SIGKILL if it is still running after 15 s.
async fn stop_child(child: &mut tokio::process::Child, pid: u32) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
}

/// VmRSS and VmHWM (peak RSS) of a process, from /proc/PID/status.
fn read_memory(pid: u32) -> anyhow::Result<Memory> {
    let pid = i32::try_from(pid).with_context(|| format!("process id {pid}"))?;
    let status = procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(Memory {
        rss_kb: status
            .vmrss
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?,
        hwm_kb: status
            .vmhwm
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))?,
    })
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `lethe` binary: `--lethe-bin`, else the one beside this benchmark, else
/// `target/release/lethe` (built with cargo when missing).
pub(super) async fn lethe_binary(settings: &Settings) -> anyhow::Result<PathBuf> {
    if let Some(path) = &settings.lethe_bin {
        // Absolute: the child runs in a directory of its own.
        return std::fs::canonicalize(path)
            .with_context(|| format!("--lethe-bin {}", path.display()));
    }
    if let Some(beside) = std::env::current_exe()?
        .parent()
        .map(|dir| dir.join("lethe"))
        .filter(|p| p.is_file())
    {
        return Ok(beside);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .to_path_buf();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let release = target.join("release").join("lethe");
    if release.is_file() {
        return Ok(release);
    }
    eprintln!(
        "building {} (cargo build --release --bin lethe)",
        release.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = tokio::process::Command::new(cargo)
        .args(["build", "--release", "-p", "lethe-engine", "--bin", "lethe"])
        .current_dir(&root)
        .status()
        .await?;
    if !status.success() || !release.is_file() {
        bail!("building the lethe binary failed ({status})");
    }
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_proc_status() {
        let before = read_memory(std::process::id()).unwrap();
        // A page-touched allocation the size of several megabytes moves the high-water mark.
        let block = vec![1_u8; 32 << 20];
        let after = read_memory(std::process::id()).unwrap();
        assert!(before.rss_kb > 0 && after.hwm_kb >= after.rss_kb);
        assert!(
            after.hwm_kb >= before.hwm_kb + 16 * 1024,
            "{before:?} {after:?}"
        );
        drop(block);
    }
}
