#!/usr/bin/env bash
# git daemon (git://) on a free port of 127.0.0.1, for sync-git's tests and benchmarks.
#
# `start` serves every bare repository under $TETHER_TESTBED_DIR/git-daemon/repos
# with push enabled (no authentication: git:// has none) and writes
# git-daemon.env:
#   TETHER_TEST_GIT_DAEMON_URL_BASE  git://127.0.0.1:PORT
#   TETHER_TEST_GIT_DAEMON_ROOT      directory where tests create bare repos
#                                    (`git init --bare -b main ROOT/NAME.git`,
#                                    then use URL_BASE/NAME.git)
# `stop` kills the daemon by the PID it started (TERM, wait, KILL).
set -euo pipefail

name=git-daemon
testbed_dir="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
dir="$testbed_dir/$name"
pid_file="$dir/daemon.pid"
env_file="$testbed_dir/$name.env"

# shellcheck source=../lib/testbed.sh
. "$(dirname "$0")/../lib/testbed.sh"

start() {
  if ! command -v git >/dev/null 2>&1; then
    apt_install git
  fi
  stop_pid
  pick_ports "$dir/ports" 1
  port=${ports[0]}
  mkdir -p "$dir/repos"
  rm -rf "$dir/repos/probe.git"
  git init -q --bare -b main "$dir/repos/probe.git"
  nohup git daemon --reuseaddr --listen=127.0.0.1 --port="$port" \
    --base-path="$dir/repos" --export-all --enable=receive-pack --informative-errors \
    "$dir/repos" </dev/null >"$dir/daemon.log" 2>&1 &
  echo $! >"$pid_file"
  for _ in $(seq 1 100); do
    if GIT_TERMINAL_PROMPT=0 git ls-remote "git://127.0.0.1:$port/probe.git" >/dev/null 2>&1; then
      {
        echo "TETHER_TEST_GIT_DAEMON_URL_BASE=git://127.0.0.1:$port"
        echo "TETHER_TEST_GIT_DAEMON_ROOT=$dir/repos"
      } >"$env_file"
      echo "$name ready on git://127.0.0.1:$port (pid $(cat "$pid_file"))"
      return 0
    fi
    sleep 0.1
  done
  not_ready "$dir/daemon.log"
}

testbed_main "$@"
