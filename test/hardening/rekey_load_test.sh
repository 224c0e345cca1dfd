#!/usr/bin/env bash
# Rekey under load: for 60 s, a TCP transfer (iperf3, 100 Mbit/s) and a
# sequence-numbered UDP stream (1000 datagrams/s) cross a tunnel whose Child
# SA rekeys every 5 s and whose IKE SA rekeys every 15 s: first between two
# ipsecgw gateways, then with strongSwan 5.9.8 as the peer. Shown: no UDP
# datagram lost (make-before-break: the new SA is installed before the old
# one goes, and the old one still decrypts what was in flight), TCP never
# stalls (no 1 s interval without data), the rekeys happened.
#
# Not in the test command yet: it fails with strongSwan. Measured here (the
# CPU shared with a build): between two ipsecgw gateways 0 of 60001
# datagrams lost over 12 Child SA rekeys since a rekey's responder keeps
# sending on the old SA until it is deleted (SaParams::standby; before: 25
# lost, one round trip's worth per rekey). With strongSwan as the
# responder 285 of 60001 are still lost (1663 before); where (libipsec's
# switch of its outbound SA, or ours) is the next step of issue 11.
#
# usage: rekey_load_test.sh path/to/ipsecgw. Needs root.
set -uo pipefail
IPSECGW=$(readlink -f "${1:?usage: rekey_load_test.sh path/to/ipsecgw}")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
PY=/usr/bin/python3
CHARON=/usr/lib/ipsec/charon
SECONDS_LOAD=${SECONDS_LOAD:-60}
require_root
require_tools "$PY" iperf3 swanctl "$CHARON"
test_init igwr
source "$HERE/../interop/strongswan-lib.sh"

cat > "$WORK/udpseq.py" <<'PYEOF'
# send: udpseq.py send ADDR PORT RATE SECONDS; recv: udpseq.py recv PORT SECONDS
import socket, struct, sys, time
if sys.argv[1] == "send":
    addr, port, rate, secs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.monotonic(); n = 0
    while True:
        due = t0 + n / rate
        now = time.monotonic()
        if now - t0 >= secs: break
        if due > now: time.sleep(due - now)
        s.sendto(struct.pack("!Q", n) + b"x" * 200, (addr, port)); n += 1
    print(n)
else:
    port, secs = int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("0.0.0.0", port)); s.settimeout(1.0)
    seen = set(); end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            d, _ = s.recvfrom(2048)
            seen.add(struct.unpack("!Q", d[:8])[0])
        except socket.timeout:
            pass
    top = max(seen) + 1 if seen else 0
    print(len(seen), top, top - len(seen))
PYEOF

# run_load NAME: the load through the tunnel A(ha) -> B(hb), then the checks.
run_load() {
  local name=$1
  ip netns exec "$NS-hb" iperf3 -s -1 -p 5201 > "$WORK/iperf-s.txt" 2>&1 &
  local srv=$!
  ip netns exec "$NS-hb" $PY "$WORK/udpseq.py" recv 5001 $((SECONDS_LOAD + 4)) > "$WORK/udp-recv.txt" 2>&1 &
  local rcv=$!
  sleep 0.5
  ip netns exec "$NS-ha" $PY "$WORK/udpseq.py" send 10.2.0.2 5001 1000 "$SECONDS_LOAD" > "$WORK/udp-send.txt" 2>&1 &
  local snd=$!
  ip netns exec "$NS-ha" iperf3 -c 10.2.0.2 -p 5201 -t "$SECONDS_LOAD" -b 100M -i 1 --json > "$WORK/iperf.json" 2>&1
  wait "$snd" "$rcv" "$srv" 2>/dev/null
  read -r got top lost < "$WORK/udp-recv.txt"
  local stalls
  stalls=$($PY -c "
import json
r = json.load(open('$WORK/iperf.json'))
print(sum(1 for i in r['intervals'] if i['sum']['bytes'] == 0))" 2>/dev/null || echo -1)
  echo "   $name: UDP $got of $(cat "$WORK/udp-send.txt") received ($lost missing below the highest), TCP intervals without data: $stalls"
  check "$name: no UDP datagram lost across the rekeys" test "${lost:-1}" -eq 0 -a "${got:-0}" -eq "$(cat "$WORK/udp-send.txt")"
  check "$name: TCP never stalled (no 1 s interval without data)" test "$stalls" -eq 0
}

child_rekeys() { grep -c "rekeying Child SA" "$WORK/a.log"; }
ike_rekeys() { grep -c "rekeying the IKE SA" "$WORK/a.log"; }

echo "== two ipsecgw gateways: Child SA rekey every 5 s, IKE SA every 15 s"
netns_setup "$NS"
write_ike_pair_configs "$WORK" "aes128gcm16-prfsha256-x25519" "aes128gcm16"
$PY - "$WORK/gw-a.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["connections"]["peer"]["rekey_time"] = 15
c["connections"]["peer"]["children"]["lan"]["rekey_time"] = 5
json.dump(c, open(sys.argv[1], "w"), indent=2)
PYEOF
ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/gw-b.json" --socket "$WORK/b.sock" > "$WORK/b.log" 2>&1 &
track_gw $! "$WORK/b.log"
wait_for "$WORK/b.log" "gateway: up" 50
ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/gw-a.json" --socket "$WORK/a.sock" --log-level debug > "$WORK/a.log" 2>&1 &
track_gw $! "$WORK/a.log"
wait_for "$WORK/a.log" "Child SA .* installed" 100
run_load "ipsecgw"
check "ipsecgw: the Child SA rekeyed about every 5 s" test "$(child_rekeys)" -ge $((SECONDS_LOAD / 5 - 2))
check "ipsecgw: the IKE SA rekeyed about every 15 s" test "$(ike_rekeys)" -ge $((SECONDS_LOAD / 15 - 1))
stop_all

echo "== with strongSwan: Child SA rekey every 5 s, IKE SA every 15 s (by ipsecgw)"
netns_teardown "$NS"
netns_setup "$NS"
start_charon || exit 1
cat > "$WORK/swanctl.conf" <<CONF
connections {
  gw-a {
    version = 2
    local_addrs = 198.51.100.2
    remote_addrs = 198.51.100.1
    proposals = aes128gcm16-prfsha256-x25519
    rekey_time = 4h
    local { auth = psk
            id = gw-b.example }
    remote { auth = psk
             id = gw-a.example }
    children {
      lan {
        local_ts = 10.2.0.0/24
        remote_ts = 10.1.0.0/24
        esp_proposals = aes128gcm16
        rekey_time = 1h
        start_action = none
      }
    }
  }
}
secrets {
  ike-a {
    id-a = gw-a.example
    id-b = gw-b.example
    secret = "a long shared secret"
  }
}
CONF
swan --load-all --file "$WORK/swanctl.conf" > "$WORK/swanctl-load.log" 2>&1
cat > "$WORK/gw-a.json" <<JSON
{
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "connections": {
    "site-b": {
      "local_addrs": ["198.51.100.1"], "remote_addrs": ["198.51.100.2"],
      "local":  { "auth": "psk", "id": "gw-a.example" },
      "remote": { "auth": "psk", "id": "gw-b.example" },
      "proposals": ["aes128gcm16-prfsha256-x25519"],
      "rekey_time": 15,
      "children": {
        "lan": { "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"],
                 "esp_proposals": ["aes128gcm16"], "rekey_time": 5, "start_action": "start" }
      }
    }
  },
  "secrets": { "site-b": { "ids": ["gw-a.example", "gw-b.example"], "secret": "a long shared secret" } }
}
JSON
: > "$WORK/a.log"
start_ipsecgw
wait_installed
run_load "strongSwan"
check "strongSwan: the Child SA rekeyed about every 5 s" test "$(child_rekeys)" -ge $((SECONDS_LOAD / 5 - 2))
check "strongSwan: the IKE SA rekeyed about every 15 s" test "$(ike_rekeys)" -ge $((SECONDS_LOAD / 15 - 1))
check "strongSwan: one IKE SA and one Child SA left" \
  bash -c "$(declare -f swan list_sas sas_count); WORK='$WORK'; [ \$(sas_count ESTABLISHED) = 1 ] && [ \$(sas_count INSTALLED) = 1 ]"
test_finish
