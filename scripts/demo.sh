#!/usr/bin/env bash
# The demo: installs what is missing, builds ipsecgw, and brings up a real
# ESP tunnel between two gateways in network namespaces, with a host behind
# each, then shows traffic crossing it and what the gateways counted.
#
#   host-a 10.1.0.2 -- gw-a 198.51.100.1 ====== ESP ====== 198.51.100.2 gw-b -- 10.2.0.2 host-b
#
# Run as root on Debian. Everything it creates is removed when it ends.
#
#   MODE=ike     (default) the gateways negotiate the SAs with IKEv2 (PSK);
#   MODE=manual  manual keys instead; IKE=... and ESP=... choose the proposals.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ESP=${ESP:-aes256gcm16}
ENCAP=${ENCAP:-udp}
MODE=${MODE:-ike}
IKE=${IKE:-aes256gcm16-prfsha384-x25519}

source scripts/as-root.sh "$@"
bash scripts/install-deps.sh demo
if [ ! -x build/cli/ipsecgw ] || [ -n "$(find core esp ike tun config cli -newer build/cli/ipsecgw -name '*.[ch]pp' 2>/dev/null | head -1)" ]; then
  echo "== building ipsecgw"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)" --target ipsecgw >/dev/null
fi
IPSECGW=$root/build/cli/ipsecgw
source scripts/netns-lib.sh

NS=igwdemo$$
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  netns_teardown "$NS"
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "network namespaces $NS-{ha,ga,gb,hb}: two sites joined by a 'wan' link"
netns_setup "$NS"
if [ "$MODE" = ike ]; then
  write_ike_pair_configs "$WORK" "$IKE" "$ESP"
else
  write_pair_configs "$WORK" "$ESP" "$ENCAP" 4 "$(esp_key_len "$ESP")"
fi
"$IPSECGW" check -c "$WORK/gw-a.json"

if [ "$MODE" = ike ]; then
  say "starting gateway A and gateway B: IKEv2 with a pre-shared key, $IKE / $ESP"
else
  say "starting gateway A and gateway B (manual keys, ESP $ESP, encapsulation $ENCAP)"
fi
ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/gw-a.json" --stats-file "$WORK/a.json" --socket "$WORK/a.sock" > "$WORK/a.log" 2>&1 &
PIDS+=($!)
ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/gw-b.json" --stats-file "$WORK/b.json" --socket "$WORK/b.sock" > "$WORK/b.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/a.log" "gateway: up" && wait_for "$WORK/b.log" "gateway: up" || {
  echo "a gateway did not start:"; cat "$WORK/a.log" "$WORK/b.log"; exit 1; }
if [ "$MODE" = ike ]; then
  wait_for "$WORK/a.log" "Child SA .* installed" 100 || { echo "no Child SA:"; cat "$WORK/a.log"; exit 1; }
fi
sed 's/^/  gw-a | /' "$WORK/a.log"

say "routes on gateway A: protected traffic goes to the TUN device"
ip -n "$NS-ga" rule | grep 4500 | sed 's/^/  /'
ip -n "$NS-ga" route show table 4500 | sed 's/^/  /'

ip netns exec "$NS-ga" timeout 30 tcpdump -i "$NS-w0" -n -U -c 6 \
  "udp port 4500 or ip proto 50" > "$WORK/wan.txt" 2>/dev/null &
DUMP=$!
sleep 0.5

say "ping from host A (10.1.0.2) to host B (10.2.0.2) through the tunnel"
ip netns exec "$NS-ha" ping -c 4 -i 0.3 -W 2 10.2.0.2 | sed 's/^/  /'
wait "$DUMP" 2>/dev/null || true

say "what the wan link between the gateways carried meanwhile (tcpdump)"
sed 's/^/  /' "$WORK/wan.txt"

say "TCP transfer of 20 MB from host B to host A, checked with SHA-256"
head -c 20000000 /dev/urandom > "$WORK/payload"
want=$(sha256sum < "$WORK/payload" | cut -d' ' -f1)
ip netns exec "$NS-ha" timeout 30 nc -l -N 10.1.0.2 5001 > "$WORK/received" &
RX=$!
sleep 0.5
t0=$(date +%s.%N)
ip netns exec "$NS-hb" timeout 30 nc -N 10.1.0.2 5001 < "$WORK/payload"
wait "$RX" || true
t1=$(date +%s.%N)
got=$(sha256sum < "$WORK/received" | cut -d' ' -f1)
echo "  sent     $want"
echo "  received $got"
[ "$want" = "$got" ] && echo "  checksums match ($(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f Mbit/s", 160/(b-a)}'))" \
  || { echo "  CHECKSUMS DIFFER"; exit 1; }

sleep 1.2
say "ipsecgw status, asked over gateway A's control socket"
"$IPSECGW" status --socket "$WORK/a.sock" | sed 's/^/  /'

say "gateway B's statistics (the --stats-file it rewrites every second)"
/usr/bin/python3 - "$WORK/b.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t = s["totals"]
print(f"  active SAs: {s['active_sas']}")
print(f"  protected: {t['packets_out']} packets, {t['bytes_out']} bytes")
print(f"  received:  {t['packets_in']} packets, {t['bytes_in']} bytes")
drops = {k: v for k, v in t["drops"].items() if v}
print(f"  drops:     {drops or 'none'}")
for sa in s["sas"]:
    print(f"  SA {sa['name']}: out SPI {sa['spi_out']}, in SPI {sa['spi_in']}, {sa['esp']}, encap {sa['encap']}")
PY

say "done: stopping the gateways (routes and the TUN device go with them)"
