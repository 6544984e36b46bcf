#!/usr/bin/env bash
# Prints a MariaDB URL for the tests (engine/tests/cleaner_sql/), without a database name (each
# test makes its own):
#   LETHE_TEST_MARIADB_URL if set; else the server on 127.0.0.1:3306 if root answers without a
#   password; else a throwaway `mariadbd` (installed with apt-get when missing) on a free port in
#   a temporary directory, whose pid is written to the file named by $LETHE_MARIADB_PIDFILE (if
#   set) so that the caller can stop it (then its directory, on the next line).
#   LETHE_TEST_THROWAWAY_MARIADB=1 forces the throwaway server. Everything but the URL goes to
#   stderr.
set -euo pipefail

log() { printf '== %s\n' "$*" >&2; }

if [ -n "${LETHE_TEST_MARIADB_URL:-}" ]; then
  log "using MariaDB from LETHE_TEST_MARIADB_URL"
  echo "$LETHE_TEST_MARIADB_URL"
  exit 0
fi

client=$(command -v mariadb || command -v mysql || true)
if [ -z "${LETHE_TEST_THROWAWAY_MARIADB:-}" ] && [ -n "$client" ] \
   && "$client" -h127.0.0.1 -P3306 -uroot -e 'select 1' >/dev/null 2>&1; then
  log "using the MariaDB already listening on 127.0.0.1:3306"
  echo "mysql://root@127.0.0.1:3306"
  exit 0
fi

if ! command -v mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null \
   || ! command -v mariadb >/dev/null; then
  log "installing MariaDB from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq mariadb-server mariadb-client >/dev/null
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/lethe-mariadb.XXXXXX)
user=$(id -un)
log "starting a throwaway MariaDB on 127.0.0.1:$port in $dir"
mariadb-install-db --no-defaults --datadir="$dir/data" --user="$user" \
  --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1
# root is reached over TCP as root@127.0.0.1: with names not resolved, grant it there.
nohup mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/sock" --port="$port" \
  --bind-address=127.0.0.1 --user="$user" --skip-name-resolve --pid-file="$dir/mariadb.pid" \
  --log-error="$dir/log" --innodb-flush-log-at-trx-commit=0 >/dev/null 2>&1 &
pid=$!
deadline=$((SECONDS + 60))
until mariadb --no-defaults -S "$dir/sock" -uroot -e 'select 1' >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$pid" 2>/dev/null; then
    log "the throwaway MariaDB did not answer within 60 s; its log:"
    cat "$dir/log" >&2 || true
    kill "$pid" 2>/dev/null || true
    exit 1
  fi
  sleep 0.2
done
mariadb --no-defaults -S "$dir/sock" -uroot -e \
  "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
if [ -n "${LETHE_MARIADB_PIDFILE:-}" ]; then
  echo "$pid" >"$LETHE_MARIADB_PIDFILE"
  echo "$dir" >>"$LETHE_MARIADB_PIDFILE"
fi
echo "mysql://root@127.0.0.1:$port"
