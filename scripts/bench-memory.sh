#!/usr/bin/env bash
# Peak RSS of `tether sync --once` (the initial push) and `tether restore`
# for a tree of many small files (issue 11, item 8). Figures go to
# BENCHMARKS.md ("Memory at scale").
#
#   FILES=100000 LAYOUTS="snapshots mirror" bash scripts/bench-memory.sh
#
# FILES      number of files (default 100000), spread over FILES/100 directories
# SIZE       bytes per file (default 1024)
# LAYOUTS    any of: snapshots mirror git s3-snapshots s3-mirror (default "snapshots mirror")
#            git pushes to a local bare repository; s3-* need the testbed's
#            SeaweedFS variables (TETHER_TEST_S3_ENDPOINT, AWS_*; see scripts/testbed)
# TETHER_BIN the binary (default: built with `cargo build --release -p examples --bin tether`)
# WORK       scratch directory (default: a fresh mktemp -d, removed afterwards)
# EXTRA_URL  query parameters appended to object-store URLs (e.g. "max_entries=2000000")
#
# Peak RSS is GNU time's "Maximum resident set size". Each run uses a fresh
# state directory; the tree is generated once and reused.
set -euo pipefail

FILES=${FILES:-100000}
SIZE=${SIZE:-1024}
LAYOUTS=${LAYOUTS:-"snapshots mirror"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${TETHER_BIN:-}" ]]; then
    cargo build --release -q -p examples --bin tether --manifest-path "$ROOT/Cargo.toml"
    TETHER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tether"
fi
if [[ -z "${WORK:-}" ]]; then
    WORK=$(mktemp -d /var/tmp/tether-bench-memory.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
fi
TREE="$WORK/tree-$FILES-$SIZE"

if [[ ! -f "$TREE.complete" ]]; then
    echo "generating $FILES files of $SIZE bytes in $TREE" >&2
    rm -rf "$TREE"
    python3 - "$TREE" "$FILES" "$SIZE" <<'EOF'
import os, sys
root, files, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per_dir = 100
for i in range(files):
    d = os.path.join(root, f"d{i // per_dir:05d}")
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    # Distinct content per file (no deduplication), cheap to make.
    head = f"file {i}\n".encode()
    with open(os.path.join(d, f"f{i:07d}.txt"), "wb") as f:
        f.write((head * (size // len(head) + 1))[:size])
EOF
    touch "$TREE.complete"
fi

# peak_kib LOG: GNU time's maximum resident set size, KiB.
peak_kib() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1"; }

run() { # run NAME URL
    local name=$1 url=$2
    local state="$WORK/state-$name" dest="$WORK/restored-$name"
    rm -rf "$state" "$dest" "$WORK/state-r-$name"
    /usr/bin/time -v -o "$WORK/push-$name.time" \
        "$TETHER_BIN" --log-format text --log-level warn \
        sync "$TREE" --to "$url" --once --restore never --state-dir "$state" >"$WORK/push-$name.log" 2>&1 || {
        echo "push $name failed:" >&2; tail -5 "$WORK/push-$name.log" >&2; }
    /usr/bin/time -v -o "$WORK/restore-$name.time" \
        "$TETHER_BIN" --log-format text --log-level warn \
        restore "$dest" --from "$url" --state-dir "$WORK/state-r-$name" \
        >"$WORK/restore-$name.log" 2>&1 || {
        echo "restore $name failed:" >&2; tail -5 "$WORK/restore-$name.log" >&2; }
    local restored
    restored=$(find "$dest" -type f 2>/dev/null | wc -l)
    printf '%-14s files=%-8s push: %6.1f MiB %10s   restore: %6.1f MiB %10s  (%s files restored)\n' \
        "$name" "$FILES" \
        "$(echo "$(peak_kib "$WORK/push-$name.time") / 1024" | bc -l)" "$(wall "$WORK/push-$name.time")" \
        "$(echo "$(peak_kib "$WORK/restore-$name.time") / 1024" | bc -l)" "$(wall "$WORK/restore-$name.time")" \
        "$restored"
    rm -rf "$dest" "$state" "$WORK/state-r-$name"
}

q=${EXTRA_URL:+&$EXTRA_URL}
for layout in $LAYOUTS; do
    case $layout in
        snapshots | mirror)
            store="$WORK/store-$layout"
            rm -rf "$store" && mkdir -p "$store"
            run "$layout" "file://$store?layout=$layout$q"
            rm -rf "$store"
            ;;
        git)
            repo="$WORK/remote.git"
            rm -rf "$repo" && git init -q --bare -b main "$repo"
            run git "file://$repo"
            rm -rf "$repo"
            ;;
        s3-snapshots | s3-mirror)
            : "${TETHER_TEST_S3_ENDPOINT:?source the testbed seaweedfs.env}"
            export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-${TETHER_TEST_S3_ACCESS_KEY:-}}
            export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-${TETHER_TEST_S3_SECRET_KEY:-}}
            export AWS_REGION=${AWS_REGION:-us-east-1}
            bucket=${TETHER_TEST_S3_BUCKET:-tether-test}
            prefix="bench-memory-$$-$RANDOM"
            run "$layout" "s3://$bucket/$prefix?layout=${layout#s3-}&endpoint=$TETHER_TEST_S3_ENDPOINT&allow_http=true$q"
            ;;
        *) echo "unknown layout $layout" >&2; exit 2 ;;
    esac
done
