#!/usr/bin/env bash
# Builds the benchmark (and the `lethe` binary its memory scenario runs) in release mode and
# runs every scenario once at smoke size on both stores: seconds per scenario, about a minute in
# all on 2 cores (compiling excluded). Exits non-zero when a scenario fails (an error, a
# request that does not complete, a database that cannot be reached). The figures of a smoke
# run are not benchmarks; see docs/PERFORMANCE.md for real runs.
#
# Postgres: LETHE_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# the run makes a schema of its own there and drops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

printf '== building lethe-bench and lethe (release)\n' >&2
cargo build --release --locked --quiet -p lethe-bench -p lethe-engine --bin lethe-bench --bin lethe

printf '== bench smoke run: all --smoke --backend both\n' >&2
started=$(date +%s)
# A hard bound on the whole run, in case something hangs despite the benchmark's own limits.
timeout --kill-after=10s 300s \
  target/release/lethe-bench all --smoke --backend both --lethe-bin target/release/lethe "$@"
printf '== bench smoke run passed in %ss\n' "$(( $(date +%s) - started ))" >&2
