#!/usr/bin/env bash
# Makes sure moto's S3-compatible server (moto 5.2.5, server mode) is installed for the tests of
# the object_store cleaner (engine/tests/cleaner_object_store/), and prints the path of its
# `moto_server` binary on stdout. The tests start it themselves, one server per test binary on a
# free 127.0.0.1 port, so that a test can stop and restart it.
#
# moto is installed once, at a pinned version, into a virtualenv outside the clone,
# ${LETHE_CACHE_DIR:-$HOME/.cache/lethe}/moto-venv, and reused by every later run and clone.
# It is (re)installed only when the binary is missing or is not that version.
#
#   LETHE_TEST_MOTO_BIN=$(scripts/services/s3.sh) cargo test -p lethe-engine --test cleaner_object_store
set -euo pipefail

version=5.2.5
cache="${LETHE_CACHE_DIR:-$HOME/.cache/lethe}"
venv="$cache/moto-venv"
bin="$venv/bin/moto_server"

installed() {
  [ -x "$bin" ] && [ "$("$venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" = "$version" ]
}

if ! installed; then
  printf '== installing moto[server] %s into %s (once)\n' "$version" "$venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version" >&2
  if ! installed; then
    printf '== %s is not moto %s after the install\n' "$bin" "$version" >&2
    exit 1
  fi
fi
echo "$bin"
