#!/usr/bin/env bash
# Makes sure the Kafka-compatible broker tansu 0.6.0 is installed for the end-to-end Kafka test
# (engine/tests/kafka_tansu/), and prints the binary's path on stdout.
#
# Building tansu takes 15-30 minutes on a small machine, so it is installed once into a cache
# outside the clone, ${LETHE_CACHE_DIR:-$HOME/.cache/lethe}/tansu-0.6.0 (its build directory
# next to it, so a rebuild is incremental), and reused by every later run and every clone.
# It is (re)installed only when the binary is missing or is not 0.6.0.
#
#   LETHE_TANSU_BIN=$(scripts/tansu.sh) cargo test -p lethe-engine --test kafka_tansu
set -euo pipefail

version=0.6.0
cache="${LETHE_CACHE_DIR:-$HOME/.cache/lethe}"
root="$cache/tansu-$version"
bin="$root/bin/tansu"

if [ ! -x "$bin" ] || [ "$("$bin" --version 2>/dev/null)" != "tansu $version" ]; then
  printf '== installing tansu %s into %s (once; 15-30 minutes)\n' "$version" "$root" >&2
  mkdir -p "$cache"
  # --force: reinstall even when cargo's own records say it is there but the binary is not.
  cargo install tansu --version "$version" --locked --no-default-features --features dynostore \
    --force --root "$root" --target-dir "$cache/tansu-target" >&2
  if [ "$("$bin" --version)" != "tansu $version" ]; then
    printf '== %s does not report tansu %s after the install\n' "$bin" "$version" >&2
    exit 1
  fi
fi
echo "$bin"
