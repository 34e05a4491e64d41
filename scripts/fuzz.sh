#!/usr/bin/env bash
# Fuzzes every decoder of remote or client input (targets in fuzz/fuzz_targets/,
# seeds in fuzz/corpus/<target>/) with cargo-fuzz and libFuzzer.
#
#   scripts/fuzz.sh                      every target for FUZZ_SECONDS (60) each, two at a time
#                                        (the last step of .ci/run: about 5 min plus the build)
#   scripts/fuzz.sh s3_v2_node git_tree only these targets
#   FUZZ_SECONDS=3600 scripts/fuzz.sh    the longer run: an hour per target (5 h in all)
#   FUZZ_SANITIZER=address FUZZ_SECONDS=600 scripts/fuzz.sh  with AddressSanitizer (slower)
#
# Before fuzzing, each target runs once over its seeds and must accept at
# least one (a target that refuses every seed tests only its first check);
# after, each prints its coverage (edges) after the seeds and at the end.
# Seeds are written by fuzz/examples/make_corpus.rs (see its header).
#
# The inputs each run finds are kept in $FUZZ_CORPUS_DIR/<target> (outside
# the repository) and fed to the next run; only the small seed corpus is
# checked in. A crash, panic, timeout (> 10 s per input) or an input using
# more than 2 GiB fails the script; the input is saved under
# fuzz/artifacts/<target>/ and printed as hex. Turn each one into a
# regression test in the owning crate, then fix it.
#
# cargo-fuzz passes nightly-only compiler flags (-Z…); the machines have one
# stable toolchain, so RUSTC_BOOTSTRAP=1 allows them on stable. Targets are
# built with debug assertions (overflow checks included) and, by default,
# no sanitizer: the code under test forbids `unsafe`, and a sanitizer halves
# the executions per second.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
tools="${TETHER_TOOLS_DIR:-/var/tmp/tether-tools}"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$tools"
fi

export RUSTC_BOOTSTRAP=1
# The fuzz build (nightly flags, libFuzzer instrumentation) never shares a
# directory with the main build: FUZZ_TARGET_DIR, else a `fuzz` directory
# inside the caller's CARGO_TARGET_DIR (so two checkouts with their own
# target dirs, such as CI beside a developer, keep their own fuzz builds
# and corpora), else /var/tmp/tether-fuzz-target.
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
else
  export CARGO_TARGET_DIR=/var/tmp/tether-fuzz-target
fi
seconds="${FUZZ_SECONDS:-60}"
jobs="${FUZZ_JOBS:-2}"
sanitizer="${FUZZ_SANITIZER:-none}"
corpus_root="${FUZZ_CORPUS_DIR:-$CARGO_TARGET_DIR/corpus}"
triple="$(rustc -vV | sed -n 's/^host: //p')"

cargo fmt --manifest-path fuzz/Cargo.toml -- --check

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "== building ${#targets[@]} fuzz targets (target dir $CARGO_TARGET_DIR, sanitizer $sanitizer)"
start=$SECONDS
if [ "$#" -eq 0 ]; then
  cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" --debug-assertions
else
  for t in "${targets[@]}"; do
    cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" --debug-assertions "$t"
  done
fi
echo "== built in $(( SECONDS - start )) s"

bin_dir="$CARGO_TARGET_DIR/$triple/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Every target must still accept some of its seeds (the decoders' formats
# move on; a target refusing everything tests only its first check).
echo "== checking the seeds"
for t in "${targets[@]}"; do
  TETHER_FUZZ_TRACE=1 "$bin_dir/$t" -runs=0 "fuzz/corpus/$t" >"$work/$t.seeds" 2>&1 || {
    cat "$work/$t.seeds"
    echo "$t: a seed fails (see above)" >&2
    exit 1
  }
  accepted=$(grep -c '^tether-fuzz: accepted' "$work/$t.seeds" || true)
  total=$(grep -c '^tether-fuzz: ' "$work/$t.seeds" || true)
  echo "-- $t: $accepted of $total seeds accepted"
  if [ "$accepted" -eq 0 ]; then
    grep '^tether-fuzz: ' "$work/$t.seeds" >&2 || true
    echo "$t accepts none of its seeds: update fuzz/examples/make_corpus.rs and regenerate" >&2
    exit 1
  fi
done

# One target: run for $seconds on its saved corpus plus the seeds.
fuzz_one() {
  local t="$1"
  mkdir -p "$corpus_root/$t" "fuzz/artifacts/$t"
  "$bin_dir/$t" "$corpus_root/$t" "fuzz/corpus/$t" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 \
    >"$work/$t.log" 2>&1
}

echo "== fuzzing ${#targets[@]} targets for $seconds s each, $jobs at a time"
start=$SECONDS
declare -A pids=()
failed=()
finish() {
  local pid="$1" rc="$2" t="${pids[$1]}"
  unset "pids[$pid]"
  if [ "$rc" -eq 0 ]; then
    # Coverage (edges) after the seeds and at the end: it should grow.
    local cov0 cov1 runs
    cov0=$(grep -m1 'INITED cov:' "$work/$t.log" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo '?')
    cov1=$(grep 'cov: [0-9]' "$work/$t.log" | tail -n 1 | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo '?')
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || echo '?')
    echo "-- $t: ok ($runs runs, coverage $cov0 -> $cov1 edges)"
  else
    failed+=("$t")
    echo "-- $t: FAILED"
    tail -n 40 "$work/$t.log"
    for a in $(grep -o "fuzz/artifacts/$t/[^ ]*" "$work/$t.log" | sort -u); do
      [ -f "$a" ] && echo "input ($a) as hex: $(od -An -tx1 -v "$a" | tr -d ' \n')"
    done
  fi
}
for t in "${targets[@]}"; do
  while [ "${#pids[@]}" -ge "$jobs" ]; do
    rc=0
    wait -n -p done_pid "${!pids[@]}" || rc=$?
    finish "$done_pid" "$rc"
  done
  fuzz_one "$t" &
  pids[$!]="$t"
done
while [ "${#pids[@]}" -gt 0 ]; do
  rc=0
  wait -n -p done_pid "${!pids[@]}" || rc=$?
  finish "$done_pid" "$rc"
done
echo "== fuzzed in $(( SECONDS - start )) s"
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
