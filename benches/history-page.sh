#!/usr/bin/env bash
# The history page's first paint (issue 16): server time of `GET /` (the
# timeline: Backend::history, then a listing per shown checkpoint for its
# "files changed") on a remote with 1,000 checkpoints. Goal: ≤ 200 ms.
#
#   bash benches/history-page.sh                      # file:// remote under $BENCH_WORK
#   BENCH_REMOTE='s3://…?endpoint=…' bash benches/history-page.sh   # AWS_* from the caller
#   BENCH_S3=1 bash benches/history-page.sh   # the test bed's SeaweedFS ($TETHER_TESTBED_DIR)
#   BENCH_CHECKPOINTS=200 TETHER_BIN=/path/to/tether bash benches/history-page.sh
#
# The checkpoints are made once (a small tree of 20 files, one of them
# changed per checkpoint, `tether sync --once` each time) and reused while
# $BENCH_WORK/checkpoints says the remote has them. Then `tether sync
# --ui-bind` serves the page and curl measures time to first byte on
# loopback (= server time): the first request (cold: nothing cached) and
# the median of 20 more (listings cached per checkpoint id). Prints one
# line per figure, the version measured and the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tether-target}"
work="${BENCH_WORK:-/var/tmp/tether-history-bench}"
n="${BENCH_CHECKPOINTS:-1000}"
remote="${BENCH_REMOTE:-file://$work/store}"
if [ "${BENCH_S3:-0}" = 1 ]; then
  set -a; . "${TETHER_TESTBED_DIR:-$PWD/.testbed}/seaweedfs.env"; set +a
  export AWS_ACCESS_KEY_ID="$TETHER_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$TETHER_TEST_S3_SECRET_KEY"
  export AWS_REGION=us-east-1
  mkdir -p "$work"
  [ -f "$work/s3-prefix" ] || echo "history-bench-$n-$(date +%s)" > "$work/s3-prefix"
  remote="s3://$TETHER_TEST_S3_BUCKET/$(cat "$work/s3-prefix")?endpoint=$TETHER_TEST_S3_ENDPOINT&allow_http=true"
fi
if [ -n "${TETHER_BIN:-}" ]; then
  tether="$TETHER_BIN"
else
  cargo build --release -q -p examples --bin tether
  tether="$CARGO_TARGET_DIR/release/tether"
fi
mkdir -p "$work"
export HOME="$work/home"
mkdir -p "$HOME"
src="$work/src"
if [ "$(cat "$work/checkpoints" 2>/dev/null)" != "$n $remote" ]; then
  echo "making $n checkpoints on $remote" >&2
  rm -rf "$src" "$work/store" "$work/state"
  mkdir -p "$src/notes"
  for i in $(seq 1 20); do echo "file $i" > "$src/notes/f$i.txt"; done
  for i in $(seq 1 "$n"); do
    echo "edit $i" > "$src/notes/f$((i % 20 + 1)).txt"
    "$tether" sync "$src" --to "$remote" --once --state-dir "$work/state" >/dev/null 2>"$work/once.log"
  done
  echo "$n $remote" > "$work/checkpoints"
fi
have="$("$tether" history --from "$remote" --limit 100000 | tail -n +2 | wc -l)"
echo "remote: $remote, $have checkpoints" >&2

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$tether" sync "$src" --to "$remote" --state-dir "$work/state" --ui-bind "127.0.0.1:$port" \
  > "$work/sync.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -s -o /dev/null "http://127.0.0.1:$port/nosuch" && break
  sleep 0.1
done
ttfb() { curl -s -o "$work/page.html" -w '%{time_starttransfer}\n' "http://127.0.0.1:$port/"; }
cold="$(ttfb)"
rows="$(grep -c 'class="checkpoint"' "$work/page.html" || true)"
warm="$(for _ in $(seq 1 20); do ttfb; done | sort -n | sed -n 10p)"
echo "tether $("$tether" --version | cut -d' ' -f2), load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v c="$cold" -v w="$warm" -v r="$rows" -v h="$have" 'BEGIN {
  printf "first paint, cold (history + %d listings): %.1f ms\n", r, c * 1000
  printf "first paint, warm (median of 20):          %.1f ms\n", w * 1000
  printf "(%d checkpoints on the remote, %d rows on the first page)\n", h, r }'
