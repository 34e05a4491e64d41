#!/usr/bin/env bash
# P9 (issue 13): bounded growth. 1,000 checkpoints of one-file edits in a
# 10,000-file tree (2 KiB random files in 50 directories), each checkpoint
# dated 10 minutes after the one before (about 7 days of history: tether
# under faketime, restic with `backup --time`), then the default sidecar
# policy (within=1h,hourly=48,daily=14,weekly=8) as forget + prune, and
# check (structure only, then every byte), with restic's `forget --prune`
# and `check` on the same history as the reference. Both stores are local
# directories (tether: file://), so sizes are `du` of them.
#
# The history is made in minutes while its dates span a week, so before
# maintenance the tether store's file times (the store's clock, which
# prune's grace and forget's recency rule read) are set back two days:
# what the store would show had the week really passed.
#
#   bash benches/p9.sh                       # build the history, then maintain
#   P9_PHASE=history bash benches/p9.sh      # only build it (slow part)
#   P9_PHASE=maintain bash benches/p9.sh     # only maintain (re-runs on a copy)
#   P9_CHECKPOINTS=100 bash benches/p9.sh    # a shorter history
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tether-target}"
work="${BENCH_WORK:-/var/tmp/tether-p9}"
n_files="${P9_FILES:-10000}"
checkpoints="${P9_CHECKPOINTS:-1000}"
phase="${P9_PHASE:-all}"
policy="within=1h,hourly=48,daily=14,weekly=8"
restic_policy=(--keep-within 1h --keep-hourly 48 --keep-daily 14 --keep-weekly 8)
for tool in restic faketime; do
  command -v "$tool" >/dev/null || {
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  }
done
if [ -n "${TETHER_BIN:-}" ]; then
  tether="$TETHER_BIN"
else
  cargo build --release -q -p examples --bin tether
  tether="$CARGO_TARGET_DIR/release/tether"
fi
export RESTIC_PASSWORD=bench
# Bytes of the files under a directory (not the directories themselves:
# a file:// store's 512 two-hex-digit directories would add 2 MiB).
bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
objects() { find "$1" -type f | wc -l; }
# Wall seconds of a command (its output to $work/last.out).
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$work/last.out" 2>&1 || { cat "$work/last.out" >&2; return 1; }
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

start=$(date -u -d '8 days ago' +%s)
if [ "$phase" = all ] || [ "$phase" = history ]; then
  rm -rf "$work"
  mkdir -p "$work"
  python3 benches/make-tree.py "$work/src" "$n_files"
  restic -q -r "$work/restic" init >/dev/null
  t0=$(date +%s)
  for i in $(seq 0 $((checkpoints - 1))); do
    when=$((start + i * 600))
    if [ "$i" -gt 0 ]; then
      # One line appended to one file (a different one each time).
      j=$(( (i * 7919) % n_files ))
      echo "edit $i" >> "$work/src/dir$(printf %02d $((j % 50)))/file$(printf %06d "$j").bin"
    fi
    FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f "@$(date -u -d "@$when" '+%F %T')" \
      "$tether" sync "$work/src" --to "file://$work/tether" --once --state-dir "$work/state" >/dev/null 2>&1
    restic -q -r "$work/restic" backup --time "$(date -u -d "@$when" '+%F %T')" "$work/src" >/dev/null
    if [ $((i % 100)) -eq 99 ]; then
      echo "  $((i + 1)) checkpoints ($(( $(date +%s) - t0 )) s)" >&2
    fi
  done
  find "$work/tether" -exec touch -h -d '2 days ago' {} +
fi

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
if [ "$phase" = all ] || [ "$phase" = maintain ]; then
  runs="${P9_RUNS:-3}"
  declare -a tf tc tr rf rc rr
  for run in $(seq 1 "$runs"); do
    # Each run maintains fresh copies of the same history.
    rm -rf "$work/m"
    mkdir -p "$work/m"
    cp -a "$work/tether" "$work/m/tether"
    cp -a "$work/restic" "$work/m/restic"
    url="file://$work/m/tether"
    tb0=$(bytes "$work/m/tether"); to0=$(objects "$work/m/tether")
    rb0=$(bytes "$work/m/restic")
    tf+=("$(timed "$tether" forget --from "$url" --policy "$policy" --prune)")
    cp "$work/last.out" "$work/forget.out"
    tb1=$(bytes "$work/m/tether"); to1=$(objects "$work/m/tether")
    tc+=("$(timed "$tether" check --from "$url")")
    tr+=("$(timed "$tether" check --from "$url" --read-data)")
    kept=$("$tether" history --from "$url" --limit 100000 2>/dev/null | tail -n +2 | grep -c . || true)
    rf+=("$(timed restic -r "$work/m/restic" forget "${restic_policy[@]}" --prune)")
    rb1=$(bytes "$work/m/restic")
    rc+=("$(timed restic -r "$work/m/restic" check)")
    rr+=("$(timed restic -r "$work/m/restic" check --read-data)")
    rkept=$(restic -r "$work/m/restic" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  done
  t_forget=$(median "${tf[@]}"); t_check=$(median "${tc[@]}"); t_read=$(median "${tr[@]}")
  t_rforget=$(median "${rf[@]}"); t_rcheck=$(median "${rc[@]}"); t_rread=$(median "${rr[@]}")
  # What the kept snapshots need (live data + their unique data), for this
  # workload: every original file (the oldest snapshot, which the calendar
  # rules keep as "oldest daily/weekly") plus every edited version (each
  # edit touches another file, so each is in the newest snapshot):
  # today's tree plus 2 KiB per edited file.
  edits=$((checkpoints - 1)); [ "$edits" -gt "$n_files" ] && edits=$n_files
  needed=$(( $(bytes "$work/src") + 2048 * edits ))
  echo "tether forget --prune output:"
  sed 's/^/    /' "$work/forget.out"
  echo
  ratio() { python3 -c "print(f'{$1 / $needed:.2f}')"; }
  echo "data the kept snapshots need: $needed B"
  echo
  echo "| tool | snapshots kept | store before | store after | after ÷ needed | forget + prune | check | check --read-data |"
  echo "|---|---|---|---|---|---|---|---|"
  echo "| tether | $kept | $tb0 B ($to0 objects) | $tb1 B ($to1 objects) | $(ratio "$tb1")× | $t_forget s | $t_check s | $t_read s |"
  echo "| restic | $rkept | $rb0 B | $rb1 B | $(ratio "$rb1")× | $t_rforget s | $t_rcheck s | $t_rread s |"
  echo
  echo "times: medians of $runs runs (tether forget+prune ${tf[*]}; restic ${rf[*]})"
  echo "measured: tether $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?') ($tether); $(restic version | cut -d' ' -f1-2); $checkpoints checkpoints, $n_files files"
  echo "machine: $(nproc) cores, $(uname -srm), load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M UTC')"
fi
