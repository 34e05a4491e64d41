#!/usr/bin/env bash
# P8 (issue 17): bytes and objects a one-file edit adds to the store, tether
# (snapshots layout, plaintext and encrypted) against restic, in the same run
# on the same trees: N files of 2 KiB (random bytes) in 50 directories, one
# line appended to one file, then one more backup / `tether sync --once`.
# Both tools write to a local directory (tether: file://, restic: a local
# repository), so the store's size is the sum of its files' sizes.
#
#   bash benches/p8.sh                 # 10,000 and 100,000 files
#   P8_SIZES=10000 bash benches/p8.sh  # one size
#   TETHER_BIN=/path/to/tether bash benches/p8.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tether-target}"
work="${BENCH_WORK:-/var/tmp/tether-p8}"
sizes="${P8_SIZES:-10000 100000}"
command -v restic >/dev/null || {
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null
}
if [ -n "${TETHER_BIN:-}" ]; then
  tether="$TETHER_BIN"
else
  cargo build --release -q -p examples --bin tether
  tether="$CARGO_TARGET_DIR/release/tether"
fi
export RESTIC_PASSWORD=bench
mkdir -p "$work"
key="$work/key"
if "$tether" key generate --output "$key" >/dev/null 2>&1 || [ -s "$key" ]; then
  encrypted=1
else
  encrypted=0
  echo "this tether has no 'key generate': encrypted row skipped" >&2
fi
trap 'rm -rf "$work/src" "$work/stores"' EXIT

# Bytes of the objects (files) only: `du --apparent-size` also counted the
# directories, so every new `trees/<xx>/` or `data/<xx>/` of a file://
# store added 4,096 bytes that no object store stores.
bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
objects() { find "$1" -type f | wc -l; }

echo "| files | tool | store after first push | added by the one-file edit | objects added |"
echo "|---|---|---|---|---|"
for n in $sizes; do
  rm -rf "$work/src" "$work/stores"
  mkdir -p "$work/stores"
  python3 benches/make-tree.py "$work/src" "$n"
  edited="$work/src/dir17/file000017.bin"
  original="$work/original"
  cp "$edited" "$original"
  variants=("tether" "restic")
  [ "$encrypted" = 1 ] && variants=("tether" "tether-encrypted" "restic")
  for v in "${variants[@]}"; do
    cp "$original" "$edited"
    store="$work/stores/$v"
    case "$v" in
      restic)
        restic -q -r "$store" init >/dev/null
        run() { restic -q -r "$store" backup "$work/src" >/dev/null; }
        ;;
      tether)
        run() { "$tether" sync "$work/src" --to "file://$store" --once --state-dir "$work/stores/state-$v" >/dev/null 2>&1; }
        ;;
      tether-encrypted)
        run() { TETHER_ENCRYPTION_KEY_FILE="$key" "$tether" sync "$work/src" --to "file://$store" --once --state-dir "$work/stores/state-$v" >/dev/null 2>&1; }
        ;;
    esac
    run
    b0=$(bytes "$store"); o0=$(objects "$store")
    echo "one more line" >> "$edited"
    run
    b1=$(bytes "$store"); o1=$(objects "$store")
    echo "| $n | $v | $b0 | $((b1 - b0)) | $((o1 - o0)) |"
  done
done
echo
echo "measured: tether $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?') ($tether); $(restic version | cut -d' ' -f1-2)"
echo "machine: $(nproc) cores, $(uname -srm); $(date -u '+%F %H:%M UTC')"
