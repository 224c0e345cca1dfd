#!/usr/bin/env bash
# The README's two commands, as a newcomer copies them: the first block of
# README.md holds exactly two commands, neither needs sudo, .ci/run runs the
# second, and the first (the demo) is run here exactly as written and must
# show traffic crossing a real tunnel.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
source scripts/netns-lib.sh
[ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null || skip_test "needs root (or sudo) to run the demo"
PASS=0
FAIL=0
check() {
  local what=$1; shift
  if "$@"; then PASS=$((PASS + 1)); echo "ok   $what"; else FAIL=$((FAIL + 1)); echo "FAIL $what"; fi
}
# The commands of the README's first ``` block, comments stripped.
mapfile -t cmds < <(awk '/^```/{n++; next} n==1' README.md | sed 's/[[:space:]]*#.*$//' | grep -v '^[[:space:]]*$')
check "the README starts with two commands" [ "${#cmds[@]}" -eq 2 ]
for c in "${cmds[@]}"; do
  check "'$c' needs no sudo (a fresh Debian machine as root has none)" test "${c#sudo }" = "$c"
  check "'$c' names an executable script in the checkout" test -x "${c%% *}"
done
check ".ci/run runs the second command" grep -qx "exec bash ${cmds[1]}" .ci/run

out=$(mktemp)
trap 'rm -f "$out"' EXIT
timeout 300 bash -c "${cmds[0]}" > "$out" 2>&1
rc=$?
check "'${cmds[0]}' as written exits 0" [ "$rc" -eq 0 ]
check "the demo's pings cross the tunnel" grep -q ' 0% packet loss' "$out"
check "the wan link carried ESP in UDP" grep -qE 'UDP-encap|ESP\(spi=|isakmp-nat-keep-alive|\.4500 >' "$out"
check "the 20 MB TCP transfer arrived intact" grep -q 'checksums match' "$out"
ns=$(grep -o 'igwdemo[0-9]*' "$out" | head -1)
check "the demo named its namespaces" test -n "$ns"
check "the demo removed its namespaces" bash -c "! ip netns list | grep -q '^$ns-'"
if [ "$FAIL" -ne 0 ]; then echo "--- demo output"; tail -60 "$out"; fi
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
