#!/usr/bin/env bash
# `tether history` of 1,000 snapshots on SeaweedFS on loopback (issue 17:
# ≤ 0.5 s). Makes 1,000 snapshots with `tether sync --once` (one edited
# file each) in a fresh prefix, then times `tether history --limit 1000`
# five times and prints each wall time and the median.
#
#   bash benches/history.sh
#   HISTORY_SNAPSHOTS=200 bash benches/history.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tether-target}"
export TETHER_TESTBED_DIR="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
work="${BENCH_WORK:-/var/tmp/tether-history-bench}"
count="${HISTORY_SNAPSHOTS:-1000}"
while IFS= read -r name; do unset "$name"; done < <(env | grep -o '^AWS_[A-Za-z0-9_]*' || true)
if [ -n "${TETHER_BIN:-}" ]; then
  tether="$TETHER_BIN"
else
  cargo build --release -q -p examples --bin tether
  tether="$CARGO_TARGET_DIR/release/tether"
fi
started_here=0
out="$(bash scripts/testbed/seaweedfs.sh start)"
case "$out" in *"already running"*) ;; *) started_here=1 ;; esac
cleanup() {
  rm -rf "$work"
  if [ "$started_here" = 1 ]; then bash "$repo/scripts/testbed/seaweedfs.sh" stop; fi
}
trap cleanup EXIT
set -a; . "$TETHER_TESTBED_DIR/seaweedfs.env"; set +a
export AWS_ACCESS_KEY_ID="$TETHER_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$TETHER_TEST_S3_SECRET_KEY"
url="s3://$TETHER_TEST_S3_BUCKET/history-$(date +%s%N)?endpoint=$TETHER_TEST_S3_ENDPOINT&allow_http=true"
rm -rf "$work"; mkdir -p "$work/src"
for i in $(seq 1 20); do echo "file $i" > "$work/src/f$i.txt"; done
echo "making $count snapshots" >&2
for i in $(seq 1 "$count"); do
  echo "edit $i" >> "$work/src/f$(( i % 20 + 1 )).txt"
  "$tether" sync "$work/src" --to "$url" --once --state-dir "$work/state" >/dev/null 2>&1
done
times=()
for r in 1 2 3 4 5; do
  s=$(date +%s%N)
  lines=$("$tether" history --from "$url" --limit "$count" | wc -l)
  e=$(date +%s%N)
  times+=("$(( (e - s) / 1000000 ))")
done
printf 'history --limit %s (%s lines): %s ms; median %s ms\n' "$count" "$lines" "${times[*]}" \
  "$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)"
echo "measured: tether $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?'); machine: $(nproc) cores, $(uname -srm); $(date -u '+%F %H:%M UTC')"
