#!/usr/bin/env bash
# Runs every test of the workspace against real servers on loopback.
#
# Each script in scripts/testbed/ installs (if missing), starts and stops one
# real server: `NAME.sh start` writes $TETHER_TESTBED_DIR/NAME.env with the
# variables the tests read; `NAME.sh stop` stops it by the PID it started.
# With TETHER_TESTBED=1 a test that misses its server fails instead of
# skipping. Extra arguments go to `cargo test` (for example `-p sync-core`).
set -euo pipefail
cd "$(dirname "$0")/.."

# The workspace's own target directory unless CARGO_TARGET_DIR says
# otherwise, so `cargo run` of the README and this script share one build.
export TETHER_TESTBED_DIR="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
# Tests set every S3 setting they rely on; ambient AWS_* must not leak in.
while IFS= read -r name; do unset "$name"; done < <(env | grep -o '^AWS_[A-Za-z0-9_]*' || true)

echo "== building tests (target dir ${CARGO_TARGET_DIR:-target})"
cargo test --workspace --no-fail-fast --no-run "$@"

mkdir -p "$TETHER_TESTBED_DIR"
started=()
stop_all() {
  for s in "${started[@]}"; do bash "$s" stop || echo "warning: $s stop failed" >&2; done
}
trap stop_all EXIT
for s in scripts/testbed/*.sh; do
  [ -e "$s" ] || continue
  echo "== starting $(basename "$s" .sh)"
  started=("$s" "${started[@]}")
  bash "$s" start
done
for e in "$TETHER_TESTBED_DIR"/*.env; do
  [ -e "$e" ] || continue
  set -a; . "$e"; set +a
done
export TETHER_TESTBED=1

echo "== running tests"
# --no-fail-fast: one failing test binary must not hide the other suites.
cargo test --workspace --no-fail-fast "$@"
