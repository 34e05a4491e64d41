#!/usr/bin/env bash
# tether's git backend vs the git CLI on the same git daemon, same run:
# a 10,000-file repository with one changed file (checkpoint + commit + push
# vs `git add -A && git commit -m x && git push`), and the initial push of
# 1,000 files. Prints the samples and a table of medians and ratios.
#
#   bash benches/git-vs-cli.sh            # GIT_BENCH_RUNS=7 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tether-target}"
export TETHER_TESTBED_DIR="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
cargo bench -p benches --bench git_vs_cli --no-run
bash scripts/testbed/git-daemon.sh start
trap 'bash scripts/testbed/git-daemon.sh stop' EXIT
set -a; . "$TETHER_TESTBED_DIR/git-daemon.env"; set +a
echo "machine: $(nproc) cores, $(uname -srm), $(git --version), date $(date -u +%F)"
cargo bench -p benches --bench git_vs_cli
