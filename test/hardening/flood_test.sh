#!/usr/bin/env bash
# An IKE_SA_INIT flood against an ipsecgw gateway (G) that keeps two tunnels
# up, one with strongSwan 5.9.8 (S) and one with a second ipsecgw (P), with
# ping running through both. An attacker (X) sends IKE_SA_INIT as fast as one
# core allows for 20 s: 10 s from spoofed addresses (100.64.0.0/10, nobody
# answers a COOKIE), then 10 s from its own address with one SPIi over every
# source port. Meanwhile a new peer (L, ipsecgw) connects. Shown: COOKIE
# engages, the tunnels lose at most 1% of pings and no SA, L is up within
# 5 s of starting, G's memory stays under a bound, the counters say what
# happened. G also has a connection for any address (road warriors), so the
# flood is not refused at the connection lookup but meets COOKIE.
#
#   NS-ha 10.1.0.2 -- G (NS-ga) 198.51.100.1 -- S (NS-gb, charon) -- NS-hb 10.2.0.2
#                      G 192.0.2.1   -- P (NS-peer) 192.0.2.2, inner 10.3.0.1
#                      G 198.18.0.1  -- L (NS-gw)   198.18.0.2, inner 10.4.0.1
#                      G 203.0.113.1 -- X (NS-mid)  203.0.113.2 (G's default route)
#
# usage: flood_test.sh path/to/ipsecgw path/to/ike_flood. Needs root.
set -uo pipefail
IPSECGW=$(readlink -f "${1:?usage: flood_test.sh ipsecgw ike_flood}")
FLOOD=$(readlink -f "${2:?usage: flood_test.sh ipsecgw ike_flood}")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
PY=/usr/bin/python3
CHARON=/usr/lib/ipsec/charon
MEM_BOUND_KB=${MEM_BOUND_KB:-32768}  # 32 MiB (about 11 MiB measured)
require_root
require_tools "$PY" swanctl "$CHARON" ping
test_init igwf
source "$HERE/../interop/strongswan-lib.sh"

netns_setup "$NS"
link() {  # link NAME G_ADDR PEER_ADDR
  ip netns add "$NS-$1"
  ip -n "$NS-$1" link set lo up
  ip link add "$NS-$1g" netns "$NS-ga" type veth peer name "$NS-$1p" netns "$NS-$1"
  ip -n "$NS-ga" addr add "$2/24" dev "$NS-$1g"
  ip -n "$NS-$1" addr add "$3/24" dev "$NS-$1p"
  ip -n "$NS-ga" link set "$NS-$1g" up
  ip -n "$NS-$1" link set "$NS-$1p" up
  ip -n "$NS-$1" route add default via "$2"
  ip netns exec "$NS-$1" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
}
link peer 192.0.2.1 192.0.2.2
link gw 198.18.0.1 198.18.0.2
link mid 203.0.113.1 203.0.113.2
ip -n "$NS-peer" addr add 10.3.0.1/32 dev lo
ip -n "$NS-gw" addr add 10.4.0.1/32 dev lo
ip -n "$NS-ga" route add default via 203.0.113.2  # COOKIE answers to spoofed sources go to X
ip netns exec "$NS-mid" sysctl -qw net.ipv4.ip_forward=0

PSK_S="a long shared secret for strongSwan"
PSK_P="0x$(openssl rand -hex 24)"
PSK_L="0x$(openssl rand -hex 24)"
conn_json() {  # NAME LOCAL REMOTE LID RID LTS RTS START
  cat <<JSON
    "$1": {
      "local_addrs": ["$2"], "remote_addrs": ["$3"],
      "local": { "auth": "psk", "id": "$4" }, "remote": { "auth": "psk", "id": "$5" },
      "proposals": ["aes128gcm16-prfsha256-x25519"], "dpd_delay": 5,
      "children": { "lan": { "local_ts": ["$6"], "remote_ts": ["$7"],
                             "esp_proposals": ["aes128gcm16"], "start_action": "$8" } }
    }
JSON
}
cat > "$WORK/g.json" <<JSON
{
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "connections": {
$(conn_json sw 198.51.100.1 198.51.100.2 gw-a.example gw-b.example 10.1.0.0/24 10.2.0.0/24 start),
$(conn_json peer 192.0.2.1 192.0.2.2 gw-a.example gw-p.example 10.1.0.0/24 10.3.0.1/32 start),
$(conn_json late 198.18.0.1 198.18.0.2 gw-a.example gw-l.example 10.1.0.0/24 10.4.0.1/32 none),
$(conn_json any 198.51.100.1 "" gw-a.example "" 10.1.0.0/24 10.9.0.0/16 none | sed 's/"remote_addrs": \[""\]/"remote_addrs": []/; s/"id": ""/"id": "road-warrior.example"/')
  },
  "secrets": {
    "sw": { "ids": ["gw-a.example", "gw-b.example"], "secret": "$PSK_S" },
    "peer": { "ids": ["gw-a.example", "gw-p.example"], "secret": "$PSK_P" },
    "late": { "ids": ["gw-a.example", "gw-l.example"], "secret": "$PSK_L" },
    "any": { "ids": ["road-warrior.example"], "secret": "0x$(openssl rand -hex 24)" }
  }
}
JSON
cat > "$WORK/p.json" <<JSON
{ "tun": { "name": "ipsec0", "mtu": 1400 },
  "connections": {
$(conn_json g 192.0.2.2 192.0.2.1 gw-p.example gw-a.example 10.3.0.1/32 10.1.0.0/24 none)
  },
  "secrets": { "g": { "ids": ["gw-a.example", "gw-p.example"], "secret": "$PSK_P" } } }
JSON
cat > "$WORK/l.json" <<JSON
{ "tun": { "name": "ipsec0", "mtu": 1400 },
  "connections": {
$(conn_json g 198.18.0.2 198.18.0.1 gw-l.example gw-a.example 10.4.0.1/32 10.1.0.0/24 start)
  },
  "secrets": { "g": { "ids": ["gw-a.example", "gw-l.example"], "secret": "$PSK_L" } } }
JSON

start_charon || exit 1
cat > "$WORK/swanctl.conf" <<CONF
connections {
  gw-a {
    version = 2
    local_addrs = 198.51.100.2
    remote_addrs = 198.51.100.1
    proposals = aes128gcm16-prfsha256-x25519
    local { auth = psk
            id = gw-b.example }
    remote { auth = psk
             id = gw-a.example }
    children {
      lan {
        local_ts = 10.2.0.0/24
        remote_ts = 10.1.0.0/24
        esp_proposals = aes128gcm16
        start_action = none
      }
    }
  }
}
secrets {
  ike-a {
    id-a = gw-a.example
    id-b = gw-b.example
    secret = "$PSK_S"
  }
}
CONF
swan --load-all --file "$WORK/swanctl.conf" > "$WORK/swanctl-load.log" 2>&1

ip netns exec "$NS-peer" "$IPSECGW" run -c "$WORK/p.json" --socket "$WORK/p.sock" > "$WORK/p.log" 2>&1 &
track_gw $! "$WORK/p.log"
wait_for "$WORK/p.log" "gateway: up" 50
ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/g.json" --socket "$WORK/g.sock" > "$WORK/g.log" 2>&1 &
G=$!
track_gw "$G" "$WORK/g.log"
wait_for "$WORK/g.log" "gateway: up" 50
check "before: G has its tunnels with strongSwan and with P" \
  bash -c "for i in \$(seq 100); do [ \$(grep -c 'Child SA .* installed' '$WORK/g.log') -ge 2 ] && exit 0; sleep 0.1; done; exit 1"
check "before: ping through strongSwan" ip netns exec "$NS-ha" ping -c 2 -i 0.2 -W 2 -q 10.2.0.2
check "before: ping through P" ip netns exec "$NS-ha" ping -c 2 -i 0.2 -W 2 -q 10.3.0.1

g_stat() { "$IPSECGW" stats --socket "$WORK/g.sock" --json | $PY -c "import json,sys; r=json.load(sys.stdin)['result']; print($1)"; }
ike_spis() { "$IPSECGW" status --socket "$WORK/g.sock" --json |
  $PY -c "import json,sys; r=json.load(sys.stdin)['result']; print(sorted((s['connection'], s['spi_i'], s['spi_r']) for s in r['ike_sas'] if s['state']=='ESTABLISHED' and s['connection'] in ('sw', 'peer')))"; }
SPIS_BEFORE=$(ike_spis)
SW_BEFORE=$(swan --list-sas 2>/dev/null | grep -c ESTABLISHED)

echo "== 20 s of IKE_SA_INIT flood, pings running"
# 400 pings each, 50 ms apart (20 s), through both tunnels.
ip netns exec "$NS-ha" ping -c 400 -i 0.05 -W 1 -q 10.2.0.2 > "$WORK/ping-sw.txt" 2>&1 &
PING1=$!
ip netns exec "$NS-ha" ping -c 400 -i 0.05 -W 1 -q 10.3.0.1 > "$WORK/ping-p.txt" 2>&1 &
PING2=$!
( ip netns exec "$NS-mid" "$FLOOD" spoof 198.51.100.1 10 > "$WORK/flood-spoof.txt" 2>&1
  ip netns exec "$NS-mid" "$FLOOD" ports 198.51.100.1 10 203.0.113.2 > "$WORK/flood-ports.txt" 2>&1 ) &
FLOODER=$!
: > "$WORK/rss.txt"
( for _ in $(seq 24); do grep VmRSS "/proc/$G/status" | awk '{print $2}' >> "$WORK/rss.txt"; sleep 1; done ) &
SAMPLER=$!
sleep 5
# A new peer connects in the middle of the flood (COOKIE engaged by then).
L_START=$(date +%s.%N)
ip netns exec "$NS-gw" "$IPSECGW" run -c "$WORK/l.json" --socket "$WORK/l.sock" > "$WORK/l.log" 2>&1 &
track_gw $! "$WORK/l.log"
L_UP=""
for _ in $(seq 100); do
  if grep -q "Child SA .* installed" "$WORK/l.log" 2>/dev/null; then L_UP=$(date +%s.%N); break; fi
  sleep 0.1
done
wait "$FLOODER"
wait "$PING1" "$PING2" "$SAMPLER" 2>/dev/null
L_SECS=$($PY -c "print(round($L_UP - $L_START, 2) if '$L_UP' else 'never')")
echo "   flood: $(tail -1 "$WORK/flood-spoof.txt") spoofed, $(tail -1 "$WORK/flood-ports.txt") from one SPIi over the ports"
echo "   ping loss: strongSwan $(grep -o '[0-9.]*% packet loss' "$WORK/ping-sw.txt"), P $(grep -o '[0-9.]*% packet loss' "$WORK/ping-p.txt")"
MAX_RSS=$(sort -n "$WORK/rss.txt" | tail -1)
echo "   G's memory: max VmRSS ${MAX_RSS} KiB (bound ${MEM_BOUND_KB} KiB); the new peer was up after ${L_SECS} s"
echo "   G's counters: $(g_stat "{k: r[k] for k in ('ike_half_open', 'ike_half_open_refused', 'cookies_sent', 'ike_cookies_rejected', 'ike_queue_new_full', 'ike_queue_full', 'invalid_ike_messages', 'ike_log_suppressed')}")"

loss() { grep -o '[0-9.]*% packet loss' "$1" | cut -d% -f1; }
check "the flooder sent from spoofed addresses" test "$(tail -1 "$WORK/flood-spoof.txt")" -gt 10000
check "the flooder sent with one SPIi over many ports" test "$(tail -1 "$WORK/flood-ports.txt")" -gt 10000
check "COOKIE engaged (cookies sent)" test "$(g_stat "r['cookies_sent']")" -gt 1000
check "half-open SAs stayed within their budget" test "$(g_stat "r['ike_half_open']")" -le 4096
check "the queue for new SAs shed the rest (counted)" test "$(g_stat "r['ike_queue_new_full'] + r['cookies_sent']")" -gt 10000
check "ping through strongSwan: at most 1% lost" $PY -c "import sys; sys.exit(0 if float('$(loss "$WORK/ping-sw.txt")') <= 1.0 else 1)"
check "ping through P: at most 1% lost" $PY -c "import sys; sys.exit(0 if float('$(loss "$WORK/ping-p.txt")') <= 1.0 else 1)"
check "no SA lost: G's IKE SAs are the ones from before" test "$(ike_spis)" = "$SPIS_BEFORE"
check "no SA lost: strongSwan still has its IKE SA" test "$(swan --list-sas 2>/dev/null | grep -c ESTABLISHED)" = "$SW_BEFORE"
check "the new peer connected within 5 s during the flood" \
  $PY -c "import sys; sys.exit(0 if '$L_SECS' != 'never' and float('$L_SECS') <= 5.0 else 1)"
check "G's memory stayed under ${MEM_BOUND_KB} KiB" test "$MAX_RSS" -le "$MEM_BOUND_KB"
check "after: ping through the new peer's tunnel" ip netns exec "$NS-ha" ping -c 2 -i 0.2 -W 2 -q 10.4.0.1
check "after: G answers status" "$IPSECGW" status --socket "$WORK/g.sock"

echo "== 20 s of garbage: random and malformed IKE to 500 and 4500, then ESP with unknown SPIs and bad ICVs;"
echo "   meanwhile IKE SAs that send IKE_AUTH fragments that never complete"
d_stat() { "$IPSECGW" stats --socket "$WORK/g.sock" --json | $PY -c "import json,sys; r=json.load(sys.stdin)['result']; print($1)"; }
SW_SPI=$("$IPSECGW" sa --socket "$WORK/g.sock" --json | $PY -c "
import json,sys
r=json.load(sys.stdin)['result']
print(next(s['spi_in'] for s in r['sas'] if s['name'].startswith('sw/')))")
INVALID0=$(d_stat "r['invalid_ike_messages']")
BADSPI0=$(d_stat "r['bad_spi']")
NOAUTH0=$(d_stat "r['not_authenticated']")
REFUSED0=$(d_stat "r['ike_reassembly_refused']")
ip netns exec "$NS-ha" ping -c 400 -i 0.05 -W 1 -q 10.2.0.2 > "$WORK/ping-sw2.txt" 2>&1 &
PING1=$!
ip netns exec "$NS-ha" ping -c 400 -i 0.05 -W 1 -q 10.3.0.1 > "$WORK/ping-p2.txt" 2>&1 &
PING2=$!
( ip netns exec "$NS-mid" "$FLOOD" garbage 198.51.100.1 10 > "$WORK/garbage-ike.txt" 2>&1
  ip netns exec "$NS-mid" "$FLOOD" esp 198.51.100.1 10 "$SW_SPI" > "$WORK/garbage-esp.txt" 2>&1 ) &
FLOODER=$!
# Real IKE SAs (from the attacker's own address, for the road-warrior
# connection) whose IKE_AUTH of about 40 KB comes in fragments, never the last.
ip netns exec "$NS-mid" "$FLOOD" frags 198.51.100.1 20 203.0.113.2 > "$WORK/garbage-frags.txt" 2>&1 &
FRAGGER=$!
: > "$WORK/rss2.txt"
: > "$WORK/reasm.txt"
( for _ in $(seq 22); do grep VmRSS "/proc/$G/status" | awk '{print $2}' >> "$WORK/rss2.txt"
    d_stat "r['ike_reassembly_bytes']" >> "$WORK/reasm.txt"; sleep 1; done ) &
SAMPLER=$!
wait "$FLOODER" "$FRAGGER" "$PING1" "$PING2" "$SAMPLER" 2>/dev/null
MAX_RSS2=$(sort -n "$WORK/rss2.txt" | tail -1)
MAX_REASM=$(sort -n "$WORK/reasm.txt" | tail -1)
echo "   sent: $(tail -1 "$WORK/garbage-ike.txt") IKE garbage, $(tail -1 "$WORK/garbage-esp.txt") ESP (half of it with SA $SW_SPI's SPI)"
echo "   ping loss: strongSwan $(grep -o '[0-9.]*% packet loss' "$WORK/ping-sw2.txt"), P $(grep -o '[0-9.]*% packet loss' "$WORK/ping-p2.txt"); max VmRSS ${MAX_RSS2} KiB"
echo "   G's counters: invalid IKE +$(( $(d_stat "r['invalid_ike_messages']") - INVALID0 )), bad SPI +$(( $(d_stat "r['bad_spi']") - BADSPI0 )), ICV failed +$(( $(d_stat "r['not_authenticated']") - NOAUTH0 ))"
echo "   fragments: $(tail -1 "$WORK/garbage-frags.txt") sent ($(grep -o 'held back: [0-9]*' "$WORK/garbage-frags.txt")), refused over budget +$(( $(d_stat "r['ike_reassembly_refused']") - REFUSED0 )), held at most ${MAX_REASM} bytes"
check "garbage: malformed IKE counted" test "$(d_stat "r['invalid_ike_messages']")" -gt $((INVALID0 + 10000))
check "garbage: ESP with unknown SPIs counted (bad_spi)" test "$(d_stat "r['bad_spi']")" -gt $((BADSPI0 + 10000))
check "garbage: ESP with a real SPI and a bad ICV counted" test "$(d_stat "r['not_authenticated']")" -gt $((NOAUTH0 + 10000))
check "garbage: ping through strongSwan, at most 1% lost" $PY -c "import sys; sys.exit(0 if float('$(loss "$WORK/ping-sw2.txt")') <= 1.0 else 1)"
check "garbage: ping through P, at most 1% lost" $PY -c "import sys; sys.exit(0 if float('$(loss "$WORK/ping-p2.txt")') <= 1.0 else 1)"
check "garbage: IKE_AUTH fragments were sent, the last ones held back" test "$(tail -1 "$WORK/garbage-frags.txt")" -gt 1000
check "garbage: fragments over the reassembly budget refused and counted" \
  test "$(d_stat "r['ike_reassembly_refused']")" -gt "$REFUSED0"
check "garbage: fragments held stayed within the 1 MiB reassembly budget" test "${MAX_REASM:-99999999}" -le 1048576
check "garbage: no SA lost" test "$(ike_spis)" = "$SPIS_BEFORE"
check "garbage: G's memory stayed under ${MEM_BOUND_KB} KiB" test "$MAX_RSS2" -le "$MEM_BOUND_KB"

echo "== restart: kill -9 G during traffic, start it again"
# The peers keep their stale SAs; G comes back with INITIAL_CONTACT, and
# both (strongSwan and ipsecgw) replace them. Traffic resumes within 10 s.
ip netns exec "$NS-ha" ping -c 400 -i 0.05 -W 1 10.2.0.2 > "$WORK/ping-sw3.txt" 2>&1 &
PING1=$!
ip netns exec "$NS-ha" ping -c 400 -i 0.05 -W 1 10.3.0.1 > "$WORK/ping-p3.txt" 2>&1 &
PING2=$!
sleep 2
kill -9 "$G"
wait "$G" 2>/dev/null
keep=(); for p in "${PIDS[@]}"; do [ "$p" = "$G" ] || keep+=("$p"); done; PIDS=("${keep[@]}")
keep=(); for g in "${GATEWAYS[@]}"; do [ "${g%%:*}" = "$G" ] || keep+=("$g"); done; GATEWAYS=("${keep[@]}")
KILLED_AT=$(date +%s.%N)
ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/g.json" --socket "$WORK/g.sock" > "$WORK/g2.log" 2>&1 &
G=$!
track_gw "$G" "$WORK/g2.log"
wait_for "$WORK/g2.log" "gateway: up" 50
wait "$PING1" "$PING2" 2>/dev/null
# How long the replies stopped: from the first missing sequence number to
# the next reply (pings 50 ms apart; the kill is about 2 s in).
resumed() {  # resumed PINGLOG -> seconds without replies, or "never"
  $PY - "$1" <<'PYEOF'
import re, sys
seqs = set(int(m) for m in re.findall(r"icmp_seq=(\d+)", open(sys.argv[1]).read()))
gap = next((q for q in range(20, 400) if q not in seqs), None)
if gap is None:
    print(0.0)
else:
    back = next((q for q in range(gap, 401) if q in seqs), None)
    print(round((back - gap) * 0.05, 2) if back else "never")
PYEOF
}
R_SW=$(resumed "$WORK/ping-sw3.txt")
R_P=$(resumed "$WORK/ping-p3.txt")
echo "   traffic back after: strongSwan ${R_SW} s, P ${R_P} s (ping interval 50 ms)"
check "restart: traffic through strongSwan resumes within 10 s" \
  $PY -c "import sys; sys.exit(0 if '$R_SW' != 'never' and float('$R_SW') <= 10 else 1)"
check "restart: traffic through P resumes within 10 s" \
  $PY -c "import sys; sys.exit(0 if '$R_P' != 'never' and float('$R_P') <= 10 else 1)"
check "restart: strongSwan replaced its stale IKE SA (one left)" \
  test "$(swan --list-sas 2>/dev/null | grep -c ESTABLISHED)" = 1
check "restart: P replaced its stale IKE SA (one left)" \
  test "$("$IPSECGW" status --socket "$WORK/p.sock" --json | $PY -c "import json,sys; print(len(json.load(sys.stdin)['result']['ike_sas']))")" = 1
test_finish
