#!/usr/bin/env bash
# A fuzzing campaign: run each cargo-fuzz target for SECONDS (default 600), starting from the
# committed corpus in fuzz/corpus/<target> plus fuzz/seeds/<target>, then replace the
# committed corpus with the minimised union (libFuzzer -merge=1), so that CI's replay test
# (crates/imgscrub-fuzzing/tests/corpus.rs) covers what the campaign reached.
#
#   fuzz/campaign.sh                   # every target, 10 minutes each, one after the other
#   fuzz/campaign.sh 60 fat_image      # one target, one minute
#   JOBS=2 fuzz/campaign.sh            # two targets at a time
#
# Needs a nightly toolchain and cargo-fuzz (docs/fuzzing.md). Crashes are left in
# fuzz/artifacts/<target>/; turn each into a regression input in fuzz/regressions/<target>/.
# Logs: $LOGDIR (default /tmp/imgscrub-fuzz-logs)/<target>.log, with libFuzzer's final stats.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
logs=${LOGDIR:-/tmp/imgscrub-fuzz-logs}
mkdir -p "$logs"
# Rust is memory-safe and the workspace denies unsafe code, so AddressSanitizer finds
# nothing new here; without it the targets run 2-6x faster (more inputs per minute).
# Overflow checks are on for our crates (fuzz/Cargo.toml profile): an arithmetic overflow is
# a bug even where it wraps harmlessly in a release build (the CI replay checks too).
# CARGO_TARGET_DIR lets a second campaign build while the first one's binaries run.
cargo +nightly fuzz build -O -s none >/dev/null
bin=${CARGO_TARGET_DIR:-$here/target}/x86_64-unknown-linux-gnu/release

max_len() {
  case $1 in
    ext4_image|ext4_journal|fat_image|xfs_image) echo 1025 ;;   # 256 records of 4 bytes + 1
    xfs_open) echo 40960 ;;                           # a one-AG filesystem up to its last inode
    xfs_structures) echo 4100 ;;                      # 4 option bytes + a directory block
    fat_open) echo 32768 ;;                           # BPB, FATs, root dir, first clusters
    ext4_structures|qcow2_open|partitions|ext4_open) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

run_one() {
  local t=$1 work
  work=$(mktemp -d)
  mkdir -p "corpus/$t" "artifacts/$t"
  local seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  "$bin/$t" "$work" "corpus/$t" "${seeds[@]}" -max_total_time="$secs" \
    -max_len="$(max_len "$t")" -timeout=20 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$logs/$t.log" 2>&1 || true
  local merged
  merged=$(mktemp -d)
  "$bin/$t" -merge=1 -max_len="$(max_len "$t")" "$merged" "corpus/$t" "${seeds[@]}" "$work" \
    >>"$logs/$t.log" 2>&1
  rm -rf "corpus/$t" && mkdir -p "corpus/$t" && cp "$merged"/* "corpus/$t/" 2>/dev/null || true
  rm -rf "$work" "$merged"
  local runs crashes
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(find "artifacts/$t" -type f | wc -l)
  printf '%-16s %4ss %10s runs  corpus %5s files %7s bytes  crashes %s\n' "$t" "$secs" \
    "${runs:-?}" "$(find "corpus/$t" -type f | wc -l)" \
    "$(cat "corpus/$t"/* 2>/dev/null | wc -c)" "$crashes"
}

export -f run_one max_len
export secs bin logs
printf '%s\n' "${targets[@]}" | xargs -P "${JOBS:-1}" -I{} bash -c 'run_one {}'
