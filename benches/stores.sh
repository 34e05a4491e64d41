#!/usr/bin/env bash
# One push and one restore of 10,000 × 4 KiB files per object store and
# layout, through the release `tether` CLI as users run it: `tether sync DIR
# --to URL --once` and `tether restore DIR --from URL`, each with a fresh
# state directory and a fresh prefix. Stores: `file://`, SeaweedFS (S3) and
# Azurite (Azure Blob): a server whose variables file exists is used as it
# is ($TETHER_TESTBED_DIR/NAME.env, or SEAWEEDFS_ENV / AZURITE_ENV naming
# one elsewhere, e.g. a shared test bed); otherwise it is started with
# scripts/testbed/NAME.sh in $TETHER_TESTBED_DIR and left running. Wall time
# and peak RSS come from /usr/bin/time; prints a markdown table and the load
# average before and after. For orientation, not a comparison: both servers
# share the 2 cores with the client.
#
#   bash benches/stores.sh
#   FILES=1000 STORES="file azurite" bash benches/stores.sh
#   TETHER_BIN=/path/to/tether bash benches/stores.sh
#   SEAWEEDFS_ENV=/shared/testbed/seaweedfs.env bash benches/stores.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tether-target}"
export TETHER_TESTBED_DIR="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
files="${FILES:-10000}"
stores="${STORES:-file seaweedfs azurite}"
work="${BENCH_WORK:-/var/tmp/tether-stores-bench}"
# Ambient credentials must not change what is measured.
while IFS= read -r name; do unset "$name"; done < <(env | grep -o '^\(AWS\|AZURE\|GOOGLE\)_[A-Za-z0-9_]*' || true)

if [ -n "${TETHER_BIN:-}" ]; then
  tether="$TETHER_BIN"
else
  cargo build --release -q -p examples --bin tether
  tether="$CARGO_TARGET_DIR/release/tether"
fi
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 2; }

rm -rf "$work"
mkdir -p "$work/src"
python3 - "$work/src" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(4096))
PY

run_id="$(date +%s)"
# server_env NAME FILE: loads FILE, starting the server first if it is absent.
server_env() {
  if [ ! -f "$2" ]; then
    bash "scripts/testbed/$1.sh" start >/dev/null
  fi
  set -a; . "$2"; set +a
}
# measure LABEL CMD...: runs CMD under /usr/bin/time; prints "SECONDS / MB".
measure() {
  local out="$work/time.$1"
  shift
  /usr/bin/time -f '%e %M' -o "$out" "$@" >"$work/cmd.log" 2>&1 || {
    echo "failed: $*" >&2
    tail -n 5 "$work/cmd.log" >&2
    exit 1
  }
  awk '{ printf "%.2f s / %d MB", $1, $2 / 1024 }' "$out"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| store | layout | push | restore |"
echo "|---|---|---|---|"
for store in $stores; do
  case "$store" in
    file) base="file://$work/file-$run_id" ;;
    seaweedfs)
      server_env seaweedfs "${SEAWEEDFS_ENV:-$TETHER_TESTBED_DIR/seaweedfs.env}"
      export AWS_ACCESS_KEY_ID="$TETHER_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$TETHER_TEST_S3_SECRET_KEY" AWS_REGION=us-east-1
      base="s3://$TETHER_TEST_S3_BUCKET/bench-$run_id" ;;
    azurite)
      server_env azurite "${AZURITE_ENV:-$TETHER_TESTBED_DIR/azurite.env}"
      export AZURE_STORAGE_USE_EMULATOR=true
      base="az://$TETHER_TEST_AZURE_CONTAINER/bench-$run_id" ;;
    *) echo "unknown store $store" >&2; exit 2 ;;
  esac
  for layout in snapshots mirror; do
    url="$base-$layout?layout=$layout"
    if [ "$store" = seaweedfs ]; then
      url="$url&endpoint=$TETHER_TEST_S3_ENDPOINT&allow_http=true"
    fi
    state="$work/state-$store-$layout"
    dest="$work/restore-$store-$layout"
    push="$(TETHER_STATE_DIR="$state-push" measure push "$tether" sync "$work/src" --to "$url" --once)"
    restore="$(TETHER_STATE_DIR="$state-restore" measure restore "$tether" restore "$dest" --from "$url")"
    diff -r "$work/src" "$dest" >/dev/null || { echo "restore of $url differs" >&2; exit 1; }
    echo "| $store | $layout | $push | $restore |"
  done
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tether: $tether ($files × 4 KiB files, $(date -u '+%Y-%m-%d %H:%M UTC'))"
