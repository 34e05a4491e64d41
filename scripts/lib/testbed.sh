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

# pick_ports FILE N: sets the array `ports` to N distinct TCP ports on
# 127.0.0.1 that nothing listens on. A server restarted on its data (the
# S3 outage test kills and restarts SeaweedFS) must come back on the same
# ports, so the ports are kept in FILE and reused while they are all free;
# otherwise (first start, or another program took one) fresh ones are
# picked by binding port 0. Ports are never hard-coded: a second copy of
# the test bed on the same machine gets its own.
pick_ports() {
  local file="$1" count="$2"
  ports=()
  if [ -f "$file" ]; then
    read -r -a ports <"$file" || true
    if [ "${#ports[@]}" -eq "$count" ] && python3 - "${ports[@]}" <<'PY'
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket()
    # As servers do: a port whose old connections linger in TIME_WAIT
    # (a server just killed) is still free to listen on.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
    then
      return 0
    fi
  fi
  # All sockets stay bound until every port is chosen, so the N are distinct.
  read -r -a ports < <(python3 - "$count" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
  mkdir -p "$(dirname "$file")"
  echo "${ports[*]}" >"$file"
}
