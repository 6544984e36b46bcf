//! A closed-loop load generator: `concurrency` tasks each run one operation after another until
//! the time is up or the operation budget is spent, recording each operation's latency.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cpu::CpuSample;

/// What a load run did.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed (their latency is not in `latencies_us`).
    pub errors: u64,
    /// From the start of the run until the last operation in flight finished.
    pub elapsed: Duration,
    /// Latency of every successful operation, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// The first error seen, to print.
    pub first_error: Option<String>,
    /// CPU time used before and after the run (this process, the local Postgres).
    pub cpu: Option<(CpuSample, CpuSample)>,
}

impl LoadResult {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        per_second(self.ok, self.elapsed)
    }

    /// `<prefix>cpu_us_per_op=… <prefix>pg_cpu_us_per_op=…`: CPU time per operation, of this
    /// process and of the local Postgres, while the run lasted.
    pub fn cpu_per_op(&self, prefix: &str) -> String {
        self.cpu.map_or_else(String::new, |(before, after)| {
            after.per_op_since(&before, self.ok + self.errors, prefix)
        })
    }

    /// The `p`th percentile latency (0 < p <= 100) in milliseconds; 0 when nothing succeeded.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }
}

/// `count` per second over `elapsed` (0 for an empty interval).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The `p`th percentile of sorted microsecond samples, in milliseconds (nearest rank).
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[index] as f64 / 1000.0
}

/// Runs `op(i)` for i = 0, 1, 2, ... from `concurrency` tasks until `duration` has passed or
/// `max_ops` operations were started, whichever comes first. `op` returns `Err(message)` on
/// failure.
pub async fn run<F, Fut>(concurrency: usize, duration: Duration, max_ops: u64, op: F) -> LoadResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = CpuSample::now();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let op = op.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut result = LoadResult::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_ops || Instant::now() >= deadline {
                    break;
                }
                let began = Instant::now();
                match op(i).await {
                    Ok(()) => {
                        result.ok += 1;
                        let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                        result.latencies_us.push(us);
                    }
                    Err(message) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(message);
                    }
                }
            }
            result
        });
    }
    let mut total = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(part) => {
                total.ok += part.ok;
                total.errors += part.errors;
                total.latencies_us.extend(part.latencies_us);
                if total.first_error.is_none() {
                    total.first_error = part.first_error;
                }
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("load task failed: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total.cpu = Some((cpu_before, CpuSample::now()));
    total.latencies_us.sort_unstable();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert!((percentile_ms(&samples, 50.0) - 50.0).abs() < 1e-9);
        assert!((percentile_ms(&samples, 99.0) - 99.0).abs() < 1e-9);
        assert!((percentile_ms(&samples, 100.0) - 100.0).abs() < 1e-9);
        assert!((percentile_ms(&[7000], 99.0) - 7.0).abs() < 1e-9);
        assert!(percentile_ms(&[], 50.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_run_stops_at_its_operation_budget() {
        let result = run(4, Duration::from_secs(10), 50, |i| async move {
            if i % 10 == 0 {
                Err(format!("op {i}"))
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(result.ok + result.errors, 50);
        assert_eq!(result.errors, 5);
        assert_eq!(result.latencies_us.len(), 45);
        assert!(result.first_error.is_some());
    }
}
