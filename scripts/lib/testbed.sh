# Helpers shared by the scripts in scripts/testbed/ (sourced, never run).
# They expect `pid_file`, `testbed_dir`, `name`, `port` and `env_file` to be
# set by the sourcing script, which defines `start` and ends with
# `testbed_main "$@"`.

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

# not_ready LOG...: reports that the server never answered, shows its logs,
# stops it and exits 1.
not_ready() {
  echo "$name did not answer on port $port; logs:" >&2
  cat "$@" >&2 || true
  stop_pid
  exit 1
}

# testbed_main start|stop: runs the sourcing script's `start`, or stops the
# server and removes its variables file.
testbed_main() {
  case "${1:-}" in
    start) start ;;
    stop) stop_pid; rm -f "$env_file" ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
  esac
}
