#!/usr/bin/env bash
# Reload (SIGHUP, and the `reload` verb): with three connections up, the
# configuration file is edited so that one connection is untouched, one is
# changed, one removed and one added. The untouched connection keeps its
# SPIs and carries traffic throughout; the others follow the file; routes
# follow too. Needs root; bounded; cleans up.
set -uo pipefail
IPSECGW=${1:?usage: reload_test.sh path/to/ipsecgw}
IPSECGW=$(readlink -f "$IPSECGW")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
PY=/usr/bin/python3
require_root
require_tools "$PY"

test_init igwr
A="$WORK/a.sock"
B="$WORK/b.sock"

# write_a SPEC... : each SPEC is NAME:N:ESP (child nets 10.1.N.0/24 <-> 10.2.N.0/24)
write_a() {
  $PY - "$WORK/gw-a.json" "$@" <<'PYEOF'
import json, sys
conns = {}
for spec in sys.argv[2:]:
    name, n, esp = spec.split(":")
    conns[name] = {
        "local_addrs": ["198.51.100.1"], "remote_addrs": ["198.51.100.2"],
        "local": {"auth": "psk", "id": "gw-a.example"}, "remote": {"auth": "psk", "id": "gw-b.example"},
        "proposals": ["aes256gcm16-prfsha384-x25519"],
        "children": {"net": {"local_ts": [f"10.1.{n}.0/24"], "remote_ts": [f"10.2.{n}.0/24"],
                             "esp_proposals": [esp], "start_action": "start"}}}
cfg = {"tun": {"name": "ipsec0", "mtu": 1400}, "connections": conns,
       "secrets": {"s": {"ids": ["gw-a.example", "gw-b.example"], "secret": "a reload test secret"}}}
json.dump(cfg, open(sys.argv[1], "w"), indent=2)
PYEOF
}
$PY - "$WORK/gw-b.json" <<'PYEOF'
import json, sys
children = {f"n{n}": {"local_ts": [f"10.2.{n}.0/24"], "remote_ts": [f"10.1.{n}.0/24"],
                      "esp_proposals": ["aes256gcm16", "aes128gcm16"]} for n in range(5)}
cfg = {"tun": {"name": "ipsec0", "mtu": 1400},
       "connections": {"all": {"local_addrs": ["198.51.100.2"], "remote_addrs": ["198.51.100.1"],
                               "local": {"auth": "psk", "id": "gw-b.example"},
                               "remote": {"auth": "psk", "id": "gw-a.example"},
                               "proposals": ["aes256gcm16-prfsha384-x25519"], "children": children}},
       "secrets": {"s": {"ids": ["gw-a.example", "gw-b.example"], "secret": "a reload test secret"}}}
json.dump(cfg, open(sys.argv[1], "w"), indent=2)
PYEOF

status_a() { "$IPSECGW" status --socket "$A" --json; }
q() {  # q SOCKET VERB PYEXPR (r = result)
  "$IPSECGW" "$2" --socket "$1" --json | $PY -c "import json,sys; r=json.load(sys.stdin)['result']; print($3)"
}
children_of() {  # NAME -> "spi_in spi_out algorithms" of its Child SAs on A
  q "$A" status "' '.join(c['spi_in']+'/'+c['spi_out']+'/'+c['algorithms'] for s in r['ike_sas'] if s['connection']=='$1' and s['state']=='ESTABLISHED' for c in s['children'])"
}
wait_children() {  # wait until N Child SAs are up on A
  for _ in $(seq 100); do
    [ "$(q "$A" status "sum(len(s['children']) for s in r['ike_sas'] if s['state']=='ESTABLISHED')" 2>/dev/null)" = "$1" ] && return 0
    sleep 0.1
  done
  return 1
}

netns_setup "$NS"
write_a keep:0:aes256gcm16 change:1:aes256gcm16 drop:2:aes256gcm16
ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/gw-b.json" --socket "$B" > "$WORK/b.log" 2>&1 &
track_gw $! "$WORK/b.log"
wait_for "$WORK/b.log" "gateway: up"
ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/gw-a.json" --socket "$A" > "$WORK/a.log" 2>&1 &
GWA=$!
track_gw $GWA "$WORK/a.log"
check "three connections up" wait_children 3
keep_before=$(children_of keep)
change_before=$(children_of change)
check "the untouched connection carries traffic before" ip netns exec "$NS-ha" ping -c 2 -i 0.2 -W 2 -q 10.2.0.2

# Edit: keep untouched, change's ESP proposal changed, drop removed, add new.
write_a keep:0:aes256gcm16 change:1:aes128gcm16 add:3:aes256gcm16
ip netns exec "$NS-ha" ping -c 30 -i 0.1 -W 1 10.2.0.2 > "$WORK/ping.log" 2>&1 &
PING=$!
sleep 0.5
kill -HUP "$GWA"
check "reload logged" wait_for "$WORK/a.log" "reloaded" 50
check "three connections up after reload" wait_children 3
wait "$PING"
check "untouched connection: same SPIs before and after ($keep_before)" test "$(children_of keep)" = "$keep_before"
check "untouched connection: no ping lost during the reload" grep -q " 0% packet loss" "$WORK/ping.log"
check "changed connection: re-established with the new proposal" \
  bash -c "[ '$(children_of change)' != '$change_before' ] && echo '$(children_of change)' | grep -q aes128gcm16"
check "removed connection: gone on A" test -z "$(children_of drop)"
check "removed connection: its Child SA gone on B (DELETE received)" \
  test "$(q "$B" sa "sum(1 for s in r['sas'] if '10.2.2.0' in s['selectors'])")" = 0
check "added connection: up" test -n "$(children_of add)"
check "routes follow: 10.2.3.0/24 added, 10.2.2.0/24 removed" \
  bash -c "ip -n '$NS-ga' route show table 4500 | grep -q '^10.2.3.0/24' && ! ip -n '$NS-ga' route show table 4500 | grep -q '^10.2.2.0/24'"

# The verb, with a broken file: refused, nothing changes.
echo '{ "connections": 42 }' > "$WORK/gw-a.json"
"$IPSECGW" reload --socket "$A" > "$WORK/reload.out" 2>&1
rc=$?
check "reload of a broken file fails (exit status $rc)" test "$rc" -ne 0
check "and says which key is wrong" grep -qF '$.connections' "$WORK/reload.out"
check "--json: ok false, the error names the key" \
  bash -c "'$IPSECGW' reload --socket '$A' --json | $PY -c \"import json,sys; r=json.load(sys.stdin); sys.exit(not (r['ok'] is False and '\$.connections' in r['error']))\""
check "and the SAs are untouched" test "$(children_of keep)" = "$keep_before"

test_finish
