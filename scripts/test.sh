#!/usr/bin/env bash
# Installs what is missing, builds ipsecgw, and runs every test:
#   1. release build (RelWithDebInfo): unit tests, scapy oracle, network-namespace tests;
#      then a Release build with g++ from a clean build tree
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build: unit tests and the
#      namespace tunnel test with the sanitized gateway; ThreadSanitizer build
#      (clang): the data-plane unit tests and the namespace tunnel test with
#      the gateway's several workers
#   3. libFuzzer build (clang): each fuzz target runs for FUZZ_SECONDS (default 15),
#      as many at once as there are cores (scripts/fuzz.sh fuzzes for longer)
# Run as root on Debian. Prints one line per step and a final summary; exits
# non-zero if any step failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${FUZZ_SECONDS:-15}

source scripts/as-root.sh "$@"
bash scripts/install-deps.sh test || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

# Steps (builds, test runs, fuzz runs) and, inside the ctest steps, the
# individual tests: both are counted, skipped tests apart.
passed=()
failed=()
tests_passed=0
tests_failed=0
tests_skipped=0
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

# ctest over one build tree. No test found is an error; a skipped test
# (exit 77: not root, a tool missing) is counted apart, and under CI
# (CI=true) fails the step, since CI must run everything.
run_ctest() {  # run_ctest BUILD_DIR
  local log=$1/ctest-summary.log total failed_n skipped_n
  ctest --test-dir "$1" --output-on-failure --no-tests=error -j"$jobs" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  total=$(sed -nE 's/.*tests passed, [0-9]+ tests? failed out of ([0-9]+).*/\1/p' "$log" | tail -1)
  failed_n=$(sed -nE 's/.*tests passed, ([0-9]+) tests? failed out of.*/\1/p' "$log" | tail -1)
  skipped_n=$(grep -c '(Skipped)$' "$log")
  if [ -z "$total" ]; then echo "run_ctest: no ctest summary in $log"; tests_failed=$((tests_failed + 1)); return 1; fi
  tests_passed=$((tests_passed + total - failed_n - skipped_n))
  tests_failed=$((tests_failed + failed_n))
  tests_skipped=$((tests_skipped + skipped_n))
  echo "ctest in $1: $((total - failed_n - skipped_n)) passed, $failed_n failed, $skipped_n skipped"
  if [ "$skipped_n" -gt 0 ] && [ "${CI:-}" = true ]; then
    echo "run_ctest: $skipped_n tests skipped under CI: a tool or privilege is missing"; rc=1
  fi
  # A failing step always shows in the failed count.
  if [ "$rc" -ne 0 ] && [ "$failed_n" -eq 0 ]; then tests_failed=$((tests_failed + 1)); fi
  return "$rc"
}

# Warnings are fatal in every build this command makes (IPSECGW_WERROR).
build() {  # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -DIPSECGW_WERROR=ON "$@" >/dev/null && cmake --build "$dir" -j"$jobs"
}
# A Release build (what a packager types) from an empty tree, as the README
# offers it, with one of Debian's compilers.
clean_release() {  # clean_release CC CXX
  local dir=build-release-$1
  rm -rf "$dir"
  CC=$1 CXX=$2 cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DIPSECGW_WERROR=ON &&
    cmake --build "$dir" -j"$jobs" && rm -rf "$dir"
}

# 1. Release build and every ctest test.
step "build (RelWithDebInfo)" build build -DCMAKE_BUILD_TYPE=RelWithDebInfo

# The other builds run behind the tests, one after another, in the idle
# scheduling class (SCHED_IDLE): they get only the CPU time the tests leave
# unused (most namespace tests wait on timers and peers), so the tests see
# the machine as before and the builds cost little of the wall time. Each
# writes build-logs/NAME.log and NAME.rc; `built NAME` waits for one.
logs=$root/build-logs
rm -rf "$logs"; mkdir -p "$logs"
logged() {  # logged NAME COMMAND...
  local name=$1; shift
  "$@" > "$logs/$name.log" 2>&1
  echo $? > "$logs/$name.rc.tmp" && mv "$logs/$name.rc.tmp" "$logs/$name.rc"  # whole, or not there
}
(
  chrt --idle -p 0 "$BASHPID" > /dev/null 2>&1 || renice -n 19 -p "$BASHPID" > /dev/null 2>&1
  ionice -c 3 -p "$BASHPID" > /dev/null 2>&1
  logged asan build build-asan -DCMAKE_BUILD_TYPE=Debug -DIPSECGW_SANITIZE=ON
  # (clang builds everything twice below, with -Werror: ThreadSanitizer and libFuzzer.)
  logged release clean_release gcc g++
  logged tsan env CC=clang CXX=clang++ bash -c \
    "cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPSECGW_TSAN=ON -DIPSECGW_WERROR=ON >/dev/null && cmake --build build-tsan -j$jobs --target unit_tests ipsecgw"
  logged fuzz env CC=clang CXX=clang++ bash -c \
    "cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPSECGW_FUZZ=ON -DIPSECGW_WERROR=ON >/dev/null && cmake --build build-fuzz -j$jobs"
) &
later_builds=$!
# Interrupted: the background builds go too (a background job ignores
# SIGINT), the whole tree of processes this script started for them.
kill_tree() {  # kill_tree PID: stopped first, so it starts nothing new
  local c
  kill -STOP "$1" 2>/dev/null
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do kill_tree "$c"; done
  kill "$1" 2>/dev/null
  kill -CONT "$1" 2>/dev/null
}
trap 'kill_tree "$later_builds"; exit 130' INT TERM
built() {  # built NAME: waits for that background build; its errors if it failed
  while [ ! -f "$logs/$1.rc" ]; do
    if ! kill -0 "$later_builds" 2>/dev/null; then
      [ -f "$logs/$1.rc" ] && break
      echo "the background builds ended before $1"; return 1
    fi
    sleep 1
  done
  local rc; rc=$(cat "$logs/$1.rc")
  if [ "$rc" -eq 0 ]; then
    echo "$(grep -c 'Built target' "$logs/$1.log") targets built ($logs/$1.log)"
  else
    grep -E 'error|warning|Error' "$logs/$1.log" | head -40; tail -5 "$logs/$1.log"
  fi
  return "$rc"
}

if [[ " ${failed[*]-} " != *"RelWithDebInfo"* ]]; then
  step "tests (RelWithDebInfo)" run_ctest build
fi

# 2. Sanitizers.
step "build (ASan+UBSan)" built asan
if [[ " ${failed[*]-} " != *"ASan+UBSan"* ]]; then
  # Any sanitizer report aborts the process: the unit tests fail, and the
  # namespace tests check each gateway's exit status and log.
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  step "tests (ASan+UBSan)" run_ctest build-asan
  unset ASAN_OPTIONS UBSAN_OPTIONS
fi

step "build Release from a clean tree (g++)" built release

# ThreadSanitizer: the data plane's threads (workers, control thread) in the
# unit tests that drive them, and two gateways with two workers each.
step "build (TSan, clang)" built tsan
if [[ " ${failed[*]-} " != *"TSan"* ]]; then
  export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1"
  step "tests (TSan): data plane unit tests" ./build-tsan/test/unit_tests "[esp],[core],[concurrency]"
  step "tests (TSan): netns tunnel, two workers" test/netns/tunnel_test.sh build-tsan/cli/ipsecgw
  unset TSAN_OPTIONS
fi

# 3. Fuzz targets, briefly, each from its seed corpus.
fuzz_run() {  # fuzz_run TARGET
  local t=$1 corpus="build-fuzz/corpus/$1" dict=()
  mkdir -p "$corpus"
  # Every input that once crashed a target (scripts/fuzz.sh keeps them in
  # fuzz/regressions) is replayed first; then the seeds and the kept corpus.
  if [ -d "fuzz/regressions/$t" ] && [ -n "$(ls "fuzz/regressions/$t")" ]; then
    ./build-fuzz/fuzz/"$t" fuzz/regressions/"$t"/* > "build-fuzz/$t.regressions.log" 2>&1 ||
      { echo "$t: a regression input fails again"; tail -20 "build-fuzz/$t.regressions.log"; return 1; }
  fi
  for d in "fuzz/seeds/$t" "fuzz/corpus/$t"; do [ -d "$d" ] && cp -n "$d"/* "$corpus"/ 2>/dev/null; done
  [ -f "fuzz/$t.dict" ] && dict=(-dict="$root/fuzz/$t.dict")
  (cd build-fuzz && ./fuzz/"$t" -max_total_time="$fuzz_seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
      "corpus/$t" 2>&1 | grep -E "^(stat::number_of_executed_units|Done|==|SUMMARY|artifact)" ;
   exit "${PIPESTATUS[0]}")
}
step "build (libFuzzer)" built fuzz
wait "$later_builds"
if [[ " ${failed[*]-} " != *"libFuzzer"* ]]; then
  # Every fuzz/fuzz_*.cpp must have become a target: none may vanish unrun.
  fuzz_targets() {
    local want=0 t
    for t in fuzz/fuzz_*.cpp; do
      want=$((want + 1))
      [ -x "build-fuzz/fuzz/$(basename "$t" .cpp)" ] || { echo "fuzz target $(basename "$t" .cpp) was not built"; return 1; }
    done
    echo "$want fuzz targets built"
    [ "$want" -gt 0 ]
  }
  step "fuzz targets built" fuzz_targets
  # A fuzzer uses one core: $jobs of them run at once, each into its own
  # log; then each is reported as a step of its own.
  fuzz_report() {  # fuzz_report TARGET
    cat "build-fuzz/$1.fuzz.log"
    return "$(cat "build-fuzz/$1.fuzz.rc")"
  }
  targets=()
  rm -f build-fuzz/*.fuzz.rc  # a run that writes none fails (return "")
  for t in fuzz/fuzz_*.cpp; do
    t=$(basename "$t" .cpp)
    [ -x "build-fuzz/fuzz/$t" ] && targets+=("$t")
  done
  for ((i = 0; i < ${#targets[@]}; i += jobs)); do
    for t in "${targets[@]:i:jobs}"; do
      ( fuzz_run "$t" > "build-fuzz/$t.fuzz.log" 2>&1
        echo $? > "build-fuzz/$t.fuzz.rc.tmp" && mv "build-fuzz/$t.fuzz.rc.tmp" "build-fuzz/$t.fuzz.rc" ) &
    done
    wait
  done
  for t in "${targets[@]}"; do step "fuzz $t (${fuzz_seconds} s)" fuzz_report "$t"; done
fi

echo
echo "=== summary"
for s in "${passed[@]}"; do echo "  ok      $s"; done
for s in "${failed[@]}"; do echo "  FAILED  $s"; done
echo "  steps: ${#passed[@]} ok, ${#failed[@]} failed; ctest: $tests_passed passed, $tests_failed failed, $tests_skipped skipped; ${SECONDS} s"
# Every step and every ctest test, counted once: a failed ctest step's
# failures are in tests_failed; any other step (a build, a fuzz run, a TSan
# run) counts as one.
is_ctest_step() { [[ $1 == "tests (RelWithDebInfo)" || $1 == "tests (ASan+UBSan)" ]]; }
non_ctest_failed=0
for s in "${failed[@]}"; do is_ctest_step "$s" || non_ctest_failed=$((non_ctest_failed + 1)); done
non_ctest_passed=0
for s in "${passed[@]}"; do is_ctest_step "$s" || non_ctest_passed=$((non_ctest_passed + 1)); done
echo "$((tests_passed + non_ctest_passed)) passed, $((tests_failed + non_ctest_failed)) failed, $tests_skipped skipped"
[ ${#failed[@]} -eq 0 ]
