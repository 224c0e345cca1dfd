#!/usr/bin/env bash
# Longer fuzzing than the test command's 30 s per target.
#
#   scripts/fuzz.sh MINUTES [TARGET...]
#
# Builds the libFuzzer targets (clang, build-fuzz/), then runs each (all of
# fuzz/fuzz_*.cpp by default) for MINUTES minutes on its corpus, which is
# kept in the repository: fuzz/corpus/TARGET, started from fuzz/seeds/TARGET
# and fuzz/regressions/TARGET. At the end the new corpus is merged back into
# fuzz/corpus/TARGET (minimised: only inputs that add coverage), ready to
# commit. A crash, leak or timeout is written to fuzz/regressions/TARGET/:
# commit it with its fix; the test command replays every regression input
# on each run (scripts/test.sh, fuzz step). Exit status: non-zero if any
# target found something.
set -uo pipefail
minutes=${1:?usage: scripts/fuzz.sh MINUTES [TARGET...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPSECGW_FUZZ=ON >/dev/null &&
  cmake --build build-fuzz -j"$jobs" >/dev/null || { echo "fuzz build failed"; exit 1; }
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for t in fuzz/fuzz_*.cpp; do targets+=("$(basename "$t" .cpp)"); done
fi
found=0
for t in "${targets[@]}"; do
  bin="build-fuzz/fuzz/$t"
  [ -x "$bin" ] || { echo "$t: not built"; found=1; continue; }
  corpus="fuzz/corpus/$t" work="build-fuzz/corpus-long/$t" regress="fuzz/regressions/$t"
  mkdir -p "$corpus" "$work" "$regress"
  for d in "fuzz/seeds/$t" "$regress" "$corpus"; do
    [ -d "$d" ] && cp -n "$d"/* "$work"/ 2>/dev/null
  done
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  before=$(ls "$regress" | wc -l)
  echo "== $t: $minutes min"
  "$bin" "$work" "${dict[@]}" -max_total_time=$((minutes * 60)) -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$regress/" -print_final_stats=1 > "build-fuzz/$t.long.log" 2>&1
  rc=$?
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov:" "build-fuzz/$t.long.log" | tail -3
  # Keep what adds coverage, no more.
  "$bin" -merge=1 "$corpus" "$work" > /dev/null 2>&1
  after=$(ls "$regress" | wc -l)
  if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
    echo "$t: FOUND something (exit $rc); inputs in $regress/, log build-fuzz/$t.long.log"
    found=1
  else
    echo "$t: nothing found; corpus $(ls "$corpus" | wc -l) inputs"
  fi
done
exit "$found"
