#!/usr/bin/env bash
# Prints a Redis URL for the tests (engine/tests/cleaner_redis/):
#   LETHE_TEST_REDIS_URL if set; else the server on 127.0.0.1:6379 if it answers PING; else a
#   throwaway `redis-server` (installed with apt-get when missing) on a free port, without
#   persistence, whose pid is written to the file named by $LETHE_REDIS_PIDFILE (if set) so
#   that the caller can stop it (then its directory, on the next line). LETHE_TEST_THROWAWAY_REDIS=1
#   forces the throwaway server. Everything but the URL goes to stderr.
set -euo pipefail

log() { printf '== %s\n' "$*" >&2; }

if [ -n "${LETHE_TEST_REDIS_URL:-}" ]; then
  log "using Redis from LETHE_TEST_REDIS_URL"
  echo "$LETHE_TEST_REDIS_URL"
  exit 0
fi

if [ -z "${LETHE_TEST_THROWAWAY_REDIS:-}" ] && command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; then
  log "using the Redis already listening on 127.0.0.1:6379"
  echo "redis://127.0.0.1:6379/0"
  exit 0
fi

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  log "installing Redis from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq redis-server >/dev/null
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/lethe-redis.XXXXXX)
log "starting a throwaway Redis on 127.0.0.1:$port in $dir"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/log" >&2
deadline=$((SECONDS + 20))
until [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "the throwaway Redis did not answer within 20 s; its log:"
    cat "$dir/log" >&2 || true
    exit 1
  fi
  sleep 0.1
done
if [ -n "${LETHE_REDIS_PIDFILE:-}" ]; then
  cat "$dir/redis.pid" >"$LETHE_REDIS_PIDFILE"
  echo "$dir" >>"$LETHE_REDIS_PIDFILE"
fi
echo "redis://127.0.0.1:$port/0"
