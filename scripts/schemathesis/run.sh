#!/usr/bin/env bash
# Holds the server to its OpenAPI document: starts a real `lethe serve` (the debug binary,
# SQLite in a temporary directory, bearer tokens and two cleaners configured) on a free
# 127.0.0.1 port and runs schemathesis against its /openapi.json with every check. Any
# failure fails the script.
#
# schemathesis is installed once, at a pinned version, into a virtualenv outside the clone
# (LETHE_SCHEMATHESIS_VENV, default ~/.cache/lethe/schemathesis-venv). The run is bounded:
# a fixed seed, a fixed number of examples per operation (LETHE_SCHEMATHESIS_EXAMPLES), one
# worker; its settings, and why each exception is there, are in schemathesis.toml beside this
# script. Extra arguments are passed to `schemathesis run` (e.g. --include-path /v1/requests).
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
VENV=${LETHE_SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lethe/schemathesis-venv}
EXAMPLES=${LETHE_SCHEMATHESIS_EXAMPLES:-40}
SEED=${LETHE_SCHEMATHESIS_SEED:-20261202}

log() { printf '== %s\n' "$*" >&2; }

if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

log "building the lethe binary (debug)"
cargo build --locked --quiet -p lethe-engine --bin lethe
LETHE=$PWD/target/debug/lethe

work=$(mktemp -d /tmp/lethe-schemathesis.XXXXXX)
server=
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
# One token holds every scope, so that each operation is exercised past its auth check; the
# `ignored_auth` check sends requests without it. The http cleaner points at a closed port:
# its calls fail and are retried, which is all the workflow needs to do here.
python3 -c 'import secrets; print(secrets.token_hex(32))' >"$work/suppression.key"
cat >"$work/lethe.toml" <<EOF
[[tokens]]
name = "schemathesis"
sha256 = "$hash"
scopes = ["requests:write", "requests:read", "audit:read", "admin", "requests:approve", "suppression:read", "cleaner:billing", "cleaner:archive"]

# Suppression on, so that its check is exercised past the 404 it answers when off.
[suppression]
key_file = "$work/suppression.key"

[[cleaners]]
name = "billing"
kind = "http"
url = "http://127.0.0.1:9/erase"
secret = "schemathesis"

[[cleaners]]
name = "archive"
kind = "manual"
EOF

log "starting lethe serve on 127.0.0.1:$port (data in $work)"
(cd "$work" && exec "$LETHE" --config "$work/lethe.toml" --database-url "sqlite://$work/lethe.db" \
  serve --listen "127.0.0.1:$port") >"$work/serve.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
  if curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then
    cat "$work/serve.log" >&2
    log "lethe serve exited before answering"
    exit 1
  fi
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null

log "schemathesis $SCHEMATHESIS_VERSION: every check (see schemathesis.toml), $EXAMPLES examples per operation, seed $SEED"
status=0
PYTHONPATH=scripts/schemathesis "$VENV/bin/schemathesis" \
  --config-file scripts/schemathesis/schemathesis.toml --no-color \
  run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  "$@" || status=$?
if [ "$status" != 0 ]; then
  log "schemathesis failed; the server's log follows"
  tail -n 50 "$work/serve.log" >&2
fi
exit "$status"
