//! CPU time per operation: a figure that a shared machine's noise moves much less than
//! wall-clock rates, read from `/proc` before and after a measured cell. Two figures: this
//! process (the system under test in-process, with its load generator: Lethe's API or the
//! peer event store, and the client driving it) and the local Postgres server (every process
//! named `postgres`: its backends, the WAL writer, the checkpointer). The Postgres figure is
//! only meaningful for a server on this machine, which is what the benchmark runs against.

use procfs::process::{all_processes, Process};

/// CPU time used so far, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    process: u64,
    postgres: u64,
}

impl CpuSample {
    /// Now; zeros where `/proc` cannot be read (the figures then say 0).
    pub fn now() -> Self {
        let process = Process::myself()
            .and_then(|p| p.stat())
            .map_or(0, |s| s.utime + s.stime);
        let postgres = all_processes().map_or(0, |processes| {
            processes
                .filter_map(Result::ok)
                .filter_map(|p| p.stat().ok())
                .filter(|s| s.comm == "postgres")
                .map(|s| s.utime + s.stime)
                .sum()
        });
        Self { process, postgres }
    }

    /// `<prefix>cpu_us_per_op=… <prefix>pg_cpu_us_per_op=…` for `ops` operations since
    /// `earlier`.
    pub fn per_op_since(&self, earlier: &Self, ops: u64, prefix: &str) -> String {
        let micros = |ticks: u64| {
            let per_tick = 1e6 / procfs::ticks_per_second() as f64;
            ticks as f64 * per_tick / ops.max(1) as f64
        };
        format!(
            "{prefix}cpu_us_per_op={:.0} {prefix}pg_cpu_us_per_op={:.0}",
            micros(self.process.saturating_sub(earlier.process)),
            micros(self.postgres.saturating_sub(earlier.postgres))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_spent_here_is_counted_per_operation() {
        let before = CpuSample::now();
        // Busy until this process has used 20 clock ticks more (however loaded the machine).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut x = 0_u64;
        let spent = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let now = CpuSample::now();
            if now.process >= before.process + 20 {
                break now;
            }
            assert!(std::time::Instant::now() < deadline, "no CPU time counted");
        };
        let ticks = spent.process - before.process;
        let line = spent.per_op_since(&before, 10, "t_");
        let per_op: f64 = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("t_cpu_us_per_op="))
            .unwrap()
            .parse()
            .unwrap();
        let expected = ticks as f64 * 1e6 / procfs::ticks_per_second() as f64 / 10.0;
        assert!((per_op - expected).abs() <= 1.0, "{line}: {ticks} ticks");
        assert!(per_op >= 10_000.0, "{line}");
        assert!(line.contains("t_pg_cpu_us_per_op="), "{line}");
    }
}
