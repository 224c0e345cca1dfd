#!/usr/bin/env bash
# The scapy oracle test: offline matrix through esp_tool, then a running
# ipsecgw in a namespace against scapy in another, over raw ESP and UDP 4500,
# IPv4 and IPv6 outer, tunnel and transport mode, ESP and AH. Needs root and Debian's python3-scapy.
set -euo pipefail
IPSECGW=${1:?usage: run.sh path/to/ipsecgw}
HERE=$(cd "$(dirname "$0")" && pwd)
TOOL=$(dirname "$IPSECGW")/../test/esp_tool
PY=/usr/bin/python3
source "$HERE/../../scripts/netns-lib.sh"  # skip_test: exit 77, a failure under CI
$PY -c 'import scapy' 2>/dev/null || skip_test "Debian's python3-scapy is not installed"
[ "$(id -u)" -eq 0 ] || skip_test "needs root for network namespaces"

NS=igwo$$
WORK=$(mktemp -d)
GW_PID=
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
  ip netns del "$NS-gw" 2>/dev/null || true
  ip netns del "$NS-peer" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== offline: every algorithm, both directions"
timeout 300 $PY "$HERE/esp_oracle.py" offline "$TOOL"

echo "== on the wire: ipsecgw in $NS-gw, scapy in $NS-peer"
ip netns add "$NS-gw"
ip netns add "$NS-peer"
ip link add "$NS-g" netns "$NS-gw" type veth peer name "$NS-p" netns "$NS-peer"
ip -n "$NS-gw" link set lo up
ip -n "$NS-peer" link set lo up
ip -n "$NS-gw" addr add 198.51.100.1/24 dev "$NS-g"
ip -n "$NS-gw" -6 addr add 2001:db8::1/64 dev "$NS-g" nodad
ip -n "$NS-peer" addr add 198.51.100.2/24 dev "$NS-p"
ip -n "$NS-peer" -6 addr add 2001:db8::2/64 dev "$NS-p" nodad
ip -n "$NS-gw" addr add 10.1.0.1/32 dev lo
ip -n "$NS-gw" -6 addr add fd01::1/128 dev lo
ip -n "$NS-gw" link set "$NS-g" up
ip -n "$NS-peer" link set "$NS-p" up
ip netns exec "$NS-gw" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0

key() { openssl rand -hex "$1"; }
declare -A K
for n in v4raw v4udp v6raw v6udp; do :; done
K[v4raw_o]=$(key 36); K[v4raw_i]=$(key 36)
K[v4udp_o]=$(key 36); K[v4udp_i]=$(key 36)
K[v6raw_o]=$(key 48); K[v6raw_i]=$(key 48)
K[v6udp_o]=$(key 52); K[v6udp_i]=$(key 52)
K[v4tr_o]=$(key 20); K[v4tr_i]=$(key 20)
K[v6tr_o]=$(key 48); K[v6tr_i]=$(key 48)
K[v4ah_o]=$(key 32); K[v4ah_i]=$(key 32)
K[v6ah_o]=$(key 64); K[v6ah_i]=$(key 64)
sa() {  # name esp local remote local_ts remote_ts encap out_spi in_spi
  cat <<JSON
    "$1": { "local_addr": "$3", "remote_addr": "$4", "local_ts": ["$5"], "remote_ts": ["$6"],
            "encap": "$7", "esp": "$2",
            "out": { "spi": "$8", "key": "${K[$1_o]}" }, "in": { "spi": "$9", "key": "${K[$1_i]}" } }
JSON
}
cat > "$WORK/gw.json" <<JSON
{ "tun": { "name": "ipsec0", "mtu": 1400 },
  "udp_encap": { "port": 4500, "keepalive": 0 },
  "manual": {
$(sa v4raw aes256gcm16 198.51.100.1 198.51.100.2 10.1.0.0/24 10.2.1.0/24 none 0x1101 0x2101),
$(sa v4udp chacha20poly1305 198.51.100.1 198.51.100.2 10.1.0.0/24 10.2.2.0/24 udp 0x1102 0x2102),
$(sa v6raw aes128-sha256 2001:db8::1 2001:db8::2 fd01::/64 fd02:3::/64 none 0x1103 0x2103),
$(sa v6udp aes128ctr-sha256 2001:db8::1 2001:db8::2 fd01::/64 fd02:4::/64 udp 0x1104 0x2104),
    "v4tr": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2", "mode": "transport",
              "esp": "aes128gcm16", "out": { "spi": "0x1105", "key": "${K[v4tr_o]}" }, "in": { "spi": "0x2105", "key": "${K[v4tr_i]}" } },
    "v6tr": { "local_addr": "2001:db8::1", "remote_addr": "2001:db8::2", "mode": "transport",
              "esp": "aes128-sha256", "out": { "spi": "0x1106", "key": "${K[v6tr_o]}" }, "in": { "spi": "0x2106", "key": "${K[v6tr_i]}" } },
    "v4ah": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2", "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.5.0/24"],
              "protocol": "ah", "ah": "sha256", "out": { "spi": "0x1107", "key": "${K[v4ah_o]}" }, "in": { "spi": "0x2107", "key": "${K[v4ah_i]}" } },
    "v6ah": { "local_addr": "2001:db8::1", "remote_addr": "2001:db8::2", "local_ts": ["fd01::/64"], "remote_ts": ["fd02:5::/64"],
              "protocol": "ah", "ah": "sha512", "out": { "spi": "0x1108", "key": "${K[v6ah_o]}" }, "in": { "spi": "0x2108", "key": "${K[v6ah_i]}" } }
  } }
JSON
cat > "$WORK/keys.json" <<JSON
{ "v4raw": {"out": "${K[v4raw_o]}", "in": "${K[v4raw_i]}", "out_spi": "0x1101", "in_spi": "0x2101"},
  "v4udp": {"out": "${K[v4udp_o]}", "in": "${K[v4udp_i]}", "out_spi": "0x1102", "in_spi": "0x2102"},
  "v6raw": {"out": "${K[v6raw_o]}", "in": "${K[v6raw_i]}", "out_spi": "0x1103", "in_spi": "0x2103"},
  "v6udp": {"out": "${K[v6udp_o]}", "in": "${K[v6udp_i]}", "out_spi": "0x1104", "in_spi": "0x2104"},
  "v4tr": {"out": "${K[v4tr_o]}", "in": "${K[v4tr_i]}", "out_spi": "0x1105", "in_spi": "0x2105"},
  "v6tr": {"out": "${K[v6tr_o]}", "in": "${K[v6tr_i]}", "out_spi": "0x1106", "in_spi": "0x2106"},
  "v4ah": {"out": "${K[v4ah_o]}", "in": "${K[v4ah_i]}", "out_spi": "0x1107", "in_spi": "0x2107"},
  "v6ah": {"out": "${K[v6ah_o]}", "in": "${K[v6ah_i]}", "out_spi": "0x1108", "in_spi": "0x2108"} }
JSON
"$IPSECGW" check -c "$WORK/gw.json" >/dev/null
ip netns exec "$NS-gw" "$IPSECGW" run -c "$WORK/gw.json" --stats-file "$WORK/stats.json" > "$WORK/gw.log" 2>&1 &
GW_PID=$!
for _ in $(seq 50); do grep -q "gateway: up" "$WORK/gw.log" && break; sleep 0.1; done
rc=0
timeout 120 ip netns exec "$NS-peer" $PY "$HERE/esp_oracle.py" wire "$WORK/keys.json" "$NS-gw" "$NS-p" || rc=$?
if [ $rc -ne 0 ]; then echo "--- ipsecgw log"; cat "$WORK/gw.log"; cat "$WORK/stats.json"; fi
# The gateway must shut down cleanly: exit status 0, no sanitizer report.
kill -TERM "$GW_PID"
gw_rc=0
wait "$GW_PID" || gw_rc=$?
GW_PID=
if [ "$gw_rc" -ne 0 ] || [ -n "$(sanitizer_report "$WORK/gw.log")" ]; then
  echo "FAIL: ipsecgw exited $gw_rc"; sanitizer_report "$WORK/gw.log"; rc=1
fi
exit $rc
