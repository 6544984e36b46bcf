#!/usr/bin/env bash
# Runs every check Lethe has: formatting, clippy, and all tests against real databases.
#
# Postgres: uses LETHE_TEST_POSTGRES_URL if set; else the server on 127.0.0.1:5432 if one
# answers; else starts a throwaway cluster from the system's Postgres binaries (installing
# them with apt-get when missing) on a free port, and stops it at the end. Each run gets a
# fresh database; each test makes its own schema inside it. LETHE_TEST_THROWAWAY_POSTGRES=1
# forces the throwaway cluster (what a fresh machine with Postgres stopped goes through).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

# What to undo at exit (throwaway servers), run in order by one EXIT trap.
AT_EXIT=()
run_at_exit() { local step; for step in "${AT_EXIT[@]}"; do eval "$step" || true; done; }
trap run_at_exit EXIT

ensure_postgres_binaries() {
  if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/$1" ]; then echo "$dir/$1"; else command -v "$1"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_throwaway_postgres() {
  ensure_postgres_binaries
  local port dir runas=()
  port=$(free_port)
  dir=$(mktemp -d /tmp/lethe-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$dir"
    runas=(runuser -u postgres --)
  fi
  log "starting a throwaway Postgres on 127.0.0.1:$port in $dir"
  "${runas[@]}" "$(pg_bin initdb)" -D "$dir/data" -U postgres --auth=trust >/dev/null
  "${runas[@]}" "$(pg_bin pg_ctl)" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  PG_STOP=("${runas[@]}" "$(pg_bin pg_ctl)" -D "$dir/data" -m immediate stop)
  PG_DIR="$dir"
  AT_EXIT+=('log "stopping the throwaway Postgres"; "${PG_STOP[@]}" >/dev/null || true; rm -rf "$PG_DIR"')
  BASE_URL="postgres://postgres@127.0.0.1:$port"
}

if [ -n "${LETHE_TEST_POSTGRES_URL:-}" ]; then
  log "using Postgres from LETHE_TEST_POSTGRES_URL"
else
  command -v psql >/dev/null || ensure_postgres_binaries
  BASE_URL="postgres://postgres@127.0.0.1:5432"
  if [ -z "${LETHE_TEST_THROWAWAY_POSTGRES:-}" ] && command -v psql >/dev/null \
     && psql "$BASE_URL/postgres" -qtAc 'select 1' >/dev/null 2>&1; then
    log "using the Postgres already listening on 127.0.0.1:5432"
  else
    start_throwaway_postgres
  fi
  db="lethe_test"
  PGOPTIONS='-c client_min_messages=warning' psql "$BASE_URL/postgres" -qtA -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  export LETHE_TEST_POSTGRES_URL="$BASE_URL/$db"
fi

# Redis for the redis cleaner's tests (engine/tests/cleaner_redis/): LETHE_TEST_REDIS_URL if
# set, else 127.0.0.1:6379 if it answers, else a throwaway server stopped at exit.
REDIS_PIDFILE=$(mktemp)
AT_EXIT+=('if [ -s "$REDIS_PIDFILE" ]; then log "stopping the throwaway Redis"; kill "$(head -n 1 "$REDIS_PIDFILE")" 2>/dev/null; rm -rf "$(sed -n 2p "$REDIS_PIDFILE")"; fi; rm -f "$REDIS_PIDFILE"')
LETHE_TEST_REDIS_URL=$(LETHE_REDIS_PIDFILE="$REDIS_PIDFILE" scripts/services/redis.sh)
export LETHE_TEST_REDIS_URL

# MariaDB for the sql cleaner's tests (engine/tests/cleaner_sql/): LETHE_TEST_MARIADB_URL if
# set, else root on 127.0.0.1:3306 if it answers, else a throwaway mariadbd stopped at exit.
MARIADB_PIDFILE=$(mktemp)
AT_EXIT+=('if [ -s "$MARIADB_PIDFILE" ]; then log "stopping the throwaway MariaDB"; kill "$(head -n 1 "$MARIADB_PIDFILE")" 2>/dev/null; rm -rf "$(sed -n 2p "$MARIADB_PIDFILE")"; fi; rm -f "$MARIADB_PIDFILE"')
LETHE_TEST_MARIADB_URL=$(LETHE_MARIADB_PIDFILE="$MARIADB_PIDFILE" scripts/services/mariadb.sh)
export LETHE_TEST_MARIADB_URL

# The benchmark crate measures the peer event store, esrs, whose Postgres store builds sqlx with
# native-tls: compiling the whole workspace needs OpenSSL's headers (`lethe` alone does not).
if ! pkg-config --exists openssl 2>/dev/null; then
  log "installing OpenSSL's headers and pkg-config from Debian's packages (for bench/'s peer, esrs)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libssl-dev pkg-config >/dev/null
fi

# The dashboard's browser tests (engine/tests/dashboard/) drive Debian's headless Chromium,
# by command line and through chromedriver (WebDriver, for the clicks on its forms).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing Chromium and chromedriver from Debian's packages (for the dashboard's browser tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The end-to-end Kafka test (engine/tests/kafka_tansu/) runs the broker tansu 0.6.0, built
# once into a cache outside the clone (15-30 minutes the first time, nothing after).
LETHE_TANSU_BIN=$(scripts/tansu.sh)
export LETHE_TANSU_BIN
log "using tansu at $LETHE_TANSU_BIN"

# The object_store cleaner's tests (engine/tests/cleaner_object_store/) start moto's
# S3-compatible server themselves, one per test; it is installed once, pinned, into a
# virtualenv outside the clone.
LETHE_TEST_MOTO_BIN=$(scripts/services/s3.sh)
export LETHE_TEST_MOTO_BIN
log "using moto_server at $LETHE_TEST_MOTO_BIN"

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
results=$(mktemp)
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$results"
test_status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run: every test binary's counts added up.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
rm -f "$results"
if [ "$test_status" != 0 ]; then
  exit "$test_status"
fi
# The OpenAPI document against a running server: schemathesis (pinned, installed once into a
# virtualenv outside the clone) with every check, a fixed seed and a bounded number of cases.
log "schemathesis against lethe serve"
scripts/schemathesis/run.sh
log "benchmark smoke run (every scenario, seconds long, debug build: it proves the benchmark works; its figures are not benchmarks)"
cargo build --locked -p lethe-bench -p lethe-engine --bin lethe-bench --bin lethe
LETHE_BENCH_POSTGRES_URL="$LETHE_TEST_POSTGRES_URL" timeout --kill-after=10s 600s \
  target/debug/lethe-bench all --smoke --backend both --lethe-bin target/debug/lethe

