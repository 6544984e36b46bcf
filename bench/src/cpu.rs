//! CPU time per operation: a figure that a shared machine's noise moves much less than
//! wall-clock rates, read from `/proc` before and after a measured cell. Two figures: this
//! process (the system under test in-process, with its load generator: Lethe's API or the
//! peer event store, and the client driving it) and the local Postgres server (every process
//! named `postgres`: its backends, the WAL writer, the checkpointer, and the backends that
//! have exited, which the postmaster's children's time keeps: a pool closed during a cell takes
//! its backends away, and without them the sum would fall). The Postgres figure is only
//! meaningful for a server on this machine, which is what the benchmark runs against.

use procfs::process::{all_processes, Process};

/// One `postgres` process's CPU time, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct Ticks {
    pid: i32,
    parent: i32,
    /// Its own.
    own: u64,
    /// Its children's that have exited and been waited for.
    reaped: u64,
}

/// The server's CPU time: every process's own, and for each postmaster (a `postgres` process
/// whose parent is not one), its exited children's, so that the total does not fall when a
/// backend exits. A child is counted either alive (its own) or reaped (in its postmaster's),
/// never both.
fn server_ticks(processes: &[Ticks]) -> u64 {
    let pids: std::collections::HashSet<i32> = processes.iter().map(|p| p.pid).collect();
    processes
        .iter()
        .map(|p| {
            if pids.contains(&p.parent) {
                p.own
            } else {
                p.own + p.reaped
            }
        })
        .sum()
}

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
            let named: Vec<Ticks> = processes
                .filter_map(Result::ok)
                .filter_map(|p| p.stat().ok())
                .filter(|s| s.comm == "postgres")
                .map(|s| Ticks {
                    pid: s.pid,
                    parent: s.ppid,
                    own: s.utime + s.stime,
                    reaped: u64::try_from(s.cutime + s.cstime).unwrap_or(0),
                })
                .collect();
            server_ticks(&named)
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
    fn the_server_total_keeps_what_an_exited_backend_used() {
        let postmaster = |reaped| Ticks {
            pid: 10,
            parent: 1,
            own: 5,
            reaped,
        };
        let backend = |pid, own| Ticks {
            pid,
            parent: 10,
            own,
            reaped: 0,
        };
        let before = server_ticks(&[postmaster(0), backend(11, 40), backend(12, 7)]);
        assert_eq!(before, 52);
        // Backend 11 used 3 more ticks, then exited and was reaped; 12 used 1 more.
        let after = server_ticks(&[postmaster(43), backend(12, 8)]);
        assert_eq!(after - before, 4);
        // A backend's own children's time is in its own reaped count, not added again.
        let nested = Ticks {
            pid: 12,
            parent: 10,
            own: 8,
            reaped: 100,
        };
        assert_eq!(server_ticks(&[postmaster(43), nested]), 56);
    }

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
