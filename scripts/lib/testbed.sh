# Helpers shared by the scripts in scripts/testbed/ (sourced, never run).
# They expect `pid_file` and `testbed_dir` to be set by the sourcing script.

# stop_pid [FILE]: stops the process whose PID is in FILE (default
# $pid_file): SIGTERM, up to 5 s of waiting, then SIGKILL; removes FILE.
stop_pid() {
  local file="${1:-$pid_file}"
  [ -f "$file" ] || return 0
  local pid
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# apt_install PKG...: installs Debian packages quietly, running
# `apt-get update` at most once per test-bed directory.
apt_install() {
  local marker="$testbed_dir/.apt-updated"
  echo "installing $*"
  if [ ! -e "$marker" ]; then
    apt-get update -qq
    mkdir -p "$testbed_dir" && touch "$marker"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
