#!/usr/bin/env bash
# Getting one file back from a 100,000-file snapshot (issue 16): `tether
# restore --path` against `restic restore --include` of the same file from
# the same SeaweedFS server, both cold (fresh tether state directory, fresh
# restic cache). Reports wall time and the bytes each fetched from the
# server, counted by a byte-counting TCP relay between the tool and
# SeaweedFS (S3 signatures cover the Host header the tool sends, which the
# relay passes through unchanged).
#
#   bash benches/restore-one-file.sh
#   BENCH_FILES=20000 bash benches/restore-one-file.sh
#   TETHER_BIN=/path/to/tether bash benches/restore-one-file.sh
#
# The tree (100 folders × 1,000 files of 512 random bytes) and both
# backups are made once and reused while $BENCH_WORK/backed-up names them;
# delete that file to redo them (for example after a format change).
# Starts SeaweedFS with scripts/testbed/seaweedfs.sh (reusing one already
# running from the same $TETHER_TESTBED_DIR, and then leaving it running).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tether-target}"
export TETHER_TESTBED_DIR="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
work="${BENCH_WORK:-/var/tmp/tether-restore-one-bench}"
files="${BENCH_FILES:-100000}"
while IFS= read -r name; do unset "$name"; done < <(env | grep -o '^AWS_[A-Za-z0-9_]*' || true)
command -v restic >/dev/null || { echo "restic is needed (apt-get install restic)" >&2; exit 1; }
if [ -n "${TETHER_BIN:-}" ]; then
  tether="$TETHER_BIN"
else
  cargo build --release -q -p examples --bin tether
  tether="$CARGO_TARGET_DIR/release/tether"
fi
started_here=0
out="$(bash scripts/testbed/seaweedfs.sh start)" || { echo "could not start SeaweedFS" >&2; exit 1; }
echo "$out" >&2
case "$out" in *"already running"*) ;; *) started_here=1 ;; esac
relay_pid=
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null
  rm -rf "$work/out" "$work/state" "$work/restic-cache"
  if [ "$started_here" = 1 ]; then bash "$repo/scripts/testbed/seaweedfs.sh" stop; fi
}
trap cleanup EXIT
set -a; . "$TETHER_TESTBED_DIR/seaweedfs.env"; set +a
ep="$TETHER_TEST_S3_ENDPOINT"
bucket="$TETHER_TEST_S3_BUCKET"
export AWS_ACCESS_KEY_ID="$TETHER_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$TETHER_TEST_S3_SECRET_KEY"
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 RESTIC_PASSWORD=bench
export HOME="$work/home"
mkdir -p "$HOME"

src="$work/src"
dirs=100
per=$((files / dirs))
target="d042/f$(printf %06d $((42 * per + 42))).bin"
if [ ! -f "$src/.complete" ] || [ "$(cat "$src/.complete")" != "$files" ]; then
  echo "generating $files files in $src" >&2
  rm -rf "$src"
  python3 - "$src" "$dirs" "$per" <<'PY'
import os, sys
root, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range(dirs):
    p = os.path.join(root, f"d{d:03d}")
    os.makedirs(p)
    for i in range(per):
        with open(os.path.join(p, f"f{d * per + i:06d}.bin"), "wb") as f:
            f.write(os.urandom(512))
PY
  echo "$files" > "$src/.complete"
  rm -f "$work/backed-up"
fi

# A relay on a free port that counts the bytes SeaweedFS sends back.
relay_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
up="${ep#http://}"
python3 - "$relay_port" "${up%%/*}" "$work/relay.count" <<'PY' &
import socket, sys, threading
port, up, count_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
host, uport = up.rsplit(":", 1)
lock = threading.Lock()
total = {"down": 0, "up": 0, "conns": 0}
def save():
    with open(count_file, "w") as f:
        f.write(f'{total["down"]} {total["up"]} {total["conns"]}\n')
def pump(a, b, key):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            with lock:
                total[key] += len(data)
                save()
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
save()
while True:
    c, _ = srv.accept()
    u = socket.create_connection((host, int(uport)))
    with lock:
        total["conns"] += 1
        save()
    threading.Thread(target=pump, args=(c, u, "up"), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, "down"), daemon=True).start()
PY
relay_pid=$!
relay="http://127.0.0.1:$relay_port"
for _ in $(seq 1 50); do [ -f "$work/relay.count" ] && break; sleep 0.1; done

prefix="$(cat "$work/backed-up" 2>/dev/null || true)"
if [ -z "$prefix" ]; then
  prefix="restore-one-$(date +%s)"
  echo "backing up with tether (snapshots layout) and restic" >&2
  /usr/bin/time -o "$work/push.time" -f "tether push: %e s" "$tether" sync "$src" \
    --to "s3://$bucket/$prefix/tether?layout=snapshots&endpoint=$ep&allow_http=true" \
    --once --state-dir "$work/push-state" >/dev/null 2>"$work/push.log"
  cat "$work/push.time"
  rm -rf "$work/push-state"
  restic -q -r "s3:$ep/$bucket/$prefix/restic" init >/dev/null
  /usr/bin/time -f "restic backup: %e s" restic -q -r "s3:$ep/$bucket/$prefix/restic" \
    --cache-dir "$work/restic-cache" backup "$src" >/dev/null
  echo "$prefix" > "$work/backed-up"
fi

# measure NAME CMD...: wall time and bytes down/up through the relay.
measure() {
  local name="$1"; shift
  read -r d0 u0 c0 < "$work/relay.count"
  local t0 t1
  t0="$(date +%s.%N)"
  "$@" > "$work/last.log" 2>&1 || { echo "FAILED: $name" >&2; cat "$work/last.log" >&2; exit 1; }
  t1="$(date +%s.%N)"
  sleep 0.2
  read -r d1 u1 c1 < "$work/relay.count"
  awk -v n="$name" -v t="$(echo "$t1 - $t0" | bc)" -v d=$((d1 - d0)) -v u=$((u1 - u0)) -v c=$((c1 - c0)) \
    'BEGIN { printf "| %s | %.2f s | %.1f KiB | %.1f KiB | %d |\n", n, t, d / 1024, u / 1024, c }'
}
check() { cmp -s "$src/$target" "$1" || { echo "FAILED: $1 differs from $src/$target" >&2; exit 1; }; }

echo "tether $("$tether" --version | cut -d' ' -f2), $(restic version | cut -d' ' -f1-2), $files files, file $target, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| tool | wall | received from the server | sent | connections |"
echo "|---|---|---|---|---|"
for _ in 1 2 3; do
  rm -rf "$work/out" "$work/state" "$work/restic-cache"
  measure "tether restore --path" "$tether" restore "$work/out" \
    --from "s3://$bucket/$prefix/tether?layout=snapshots&endpoint=$relay&allow_http=true" \
    --path "$target" --state-dir "$work/state"
  check "$work/out/$target"
  rm -rf "$work/out"
  measure "restic restore --include (cold cache)" restic -q -r "s3:$relay/$bucket/$prefix/restic" \
    --cache-dir "$work/restic-cache" restore latest --target "$work/out" --include "$src/$target"
  check "$work/out/$src/$target"
done
