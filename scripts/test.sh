#!/usr/bin/env bash
# Installs what is missing, builds ipsecgw, and runs every test:
#   1. release build (RelWithDebInfo): unit tests, scapy oracle, network-namespace tests;
#      then Release builds with g++ and clang++ from clean build trees
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build: unit tests and the
#      namespace tunnel test with the sanitized gateway
#   3. libFuzzer build (clang): each fuzz target runs for FUZZ_SECONDS (default 30)
# Run as root on Debian. Prints one line per step and a final summary; exits
# non-zero if any step failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${FUZZ_SECONDS:-30}

source scripts/as-root.sh "$@"
bash scripts/install-deps.sh test || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

passed=()
failed=()
step() {
  local name=$1; shift
  local t0=$SECONDS
  echo
  echo "=== ${name}"
  if "$@"; then
    passed+=("$name")
    echo "=== ${name}: ok ($((SECONDS - t0)) s)"
  else
    failed+=("$name")
    echo "=== ${name}: FAILED ($((SECONDS - t0)) s)"
  fi
}

# Warnings are fatal in every build this command makes (IPSECGW_WERROR).
build() {  # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -DIPSECGW_WERROR=ON "$@" >/dev/null && cmake --build "$dir" -j"$jobs"
}
# A Release build (what a packager types) from an empty tree, as the README
# offers it, with one of Debian's compilers; the log is shown on failure.
clean_release() {  # clean_release CC CXX
  local dir=build-release-$1
  rm -rf "$dir"
  if CC=$1 CXX=$2 cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DIPSECGW_WERROR=ON >"$dir.log" 2>&1 &&
     cmake --build "$dir" -j"$jobs" >>"$dir.log" 2>&1; then
    echo "built $(grep -c 'Built target' "$dir.log") targets"; rm -rf "$dir" "$dir.log"
  else
    grep -E 'error|warning' "$dir.log" | head -40; return 1
  fi
}

# 1. Release build and every ctest test.
step "build (RelWithDebInfo)" build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [[ " ${failed[*]-} " != *"RelWithDebInfo"* ]]; then
  step "tests (RelWithDebInfo)" ctest --test-dir build --output-on-failure -j"$jobs"
fi

step "build Release from a clean tree (g++)" clean_release gcc g++
step "build Release from a clean tree (clang++)" clean_release clang clang++

# 2. Sanitizers.
step "build (ASan+UBSan)" build build-asan -DCMAKE_BUILD_TYPE=Debug -DIPSECGW_SANITIZE=ON
if [[ " ${failed[*]-} " != *"ASan+UBSan"* ]]; then
  step "tests (ASan+UBSan)" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi

# 3. Fuzz targets, briefly, each from its seed corpus.
fuzz_run() {  # fuzz_run TARGET
  local t=$1 corpus="build-fuzz/corpus/$1" dict=()
  mkdir -p "$corpus"
  [ -d "fuzz/seeds/$t" ] && cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null
  [ -f "fuzz/$t.dict" ] && dict=(-dict="$root/fuzz/$t.dict")
  (cd build-fuzz && ./fuzz/"$t" -max_total_time="$fuzz_seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
      "corpus/$t" 2>&1 | grep -E "^(stat::number_of_executed_units|Done|==|SUMMARY|artifact)" ;
   exit "${PIPESTATUS[0]}")
}
step "build (libFuzzer)" env CC=clang CXX=clang++ \
  bash -c "cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPSECGW_FUZZ=ON -DIPSECGW_WERROR=ON >/dev/null && cmake --build build-fuzz -j$jobs"
if [[ " ${failed[*]-} " != *"libFuzzer"* ]]; then
  for f in build-fuzz/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    step "fuzz $(basename "$f") (${fuzz_seconds} s)" fuzz_run "$(basename "$f")"
  done
fi

echo
echo "=== summary"
for s in "${passed[@]}"; do echo "  ok      $s"; done
for s in "${failed[@]}"; do echo "  FAILED  $s"; done
echo "${#passed[@]} passed, ${#failed[@]} failed (${SECONDS} s)"
[ ${#failed[@]} -eq 0 ]
