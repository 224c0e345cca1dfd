#!/usr/bin/env bash
# Throughput between two hosts through three paths, in the same run, on the
# same namespaces: plain routing, an ipsecgw pair (ESP in UDP 4500), and a
# wireguard-go pair. iperf3, one TCP stream, DURATION seconds each (default
# 10), REPEAT runs each (default 2, best counts), interleaved. Prints Gbit/s
# and ratios. Run as root.
#
#   ESP=aes128gcm16 DURATION=10 REPEAT=2 bench/throughput.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ESP=${ESP:-aes128gcm16}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-2}
source scripts/as-root.sh "$@"
bash scripts/install-deps.sh bench
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target ipsecgw >/dev/null
IPSECGW=$root/build/cli/ipsecgw
source scripts/netns-lib.sh
PY=/usr/bin/python3

NS=igwb$$
WORK=$(mktemp -d)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() { stop_all; netns_teardown "$NS"; rm -rf "$WORK"; }
trap cleanup EXIT

netns_setup "$NS"
ip netns exec "$NS-hb" iperf3 -s -B 10.2.0.2 > /dev/null 2>&1 &
IPERF_SERVER=$!
sleep 0.5

iperf() {  # prints Gbit/s of one run from host A to host B
  ip netns exec "$NS-ha" timeout $((DURATION + 20)) iperf3 -c 10.2.0.2 -t "$DURATION" -O 1 -J \
    > "$WORK/iperf.json" || { echo 0; return; }
  $PY -c "import json; print('%.3f' % (json.load(open('$WORK/iperf.json'))['end']['sum_received']['bits_per_second'] / 1e9))"
}

# --- the three paths; each up_X/down_X pair leaves the namespaces as found.
up_plain() {
  ip -n "$NS-ga" route add 10.2.0.0/24 via 198.51.100.2
  ip -n "$NS-gb" route add 10.1.0.0/24 via 198.51.100.1
}
down_plain() {
  ip -n "$NS-ga" route del 10.2.0.0/24 via 198.51.100.2
  ip -n "$NS-gb" route del 10.1.0.0/24 via 198.51.100.1
}

write_pair_configs "$WORK" "$ESP" udp 4 "$(esp_key_len "$ESP")"
up_ipsecgw() {
  ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/gw-a.json" --log-level warning > "$WORK/a.log" 2>&1 &
  PIDS+=($!)
  ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/gw-b.json" --log-level warning > "$WORK/b.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do
    ip -n "$NS-ga" link show ipsec0 >/dev/null 2>&1 && ip -n "$NS-gb" link show ipsec0 >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 0.5
  ip netns exec "$NS-ha" ping -c 1 -W 2 -q 10.2.0.2 > /dev/null
}
down_ipsecgw() { stop_all; }

WGA=wga$$ WGB=wgb$$
wg genkey > "$WORK/wa.key"; wg pubkey < "$WORK/wa.key" > "$WORK/wa.pub"
wg genkey > "$WORK/wb.key"; wg pubkey < "$WORK/wb.key" > "$WORK/wb.pub"
up_wireguard() {
  # Responder (B) first, or the first handshake is lost for 5 s.
  ip netns exec "$NS-gb" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$WGB" > "$WORK/wgb.log" 2>&1 &
  PIDS+=($!)
  ip netns exec "$NS-ga" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$WGA" > "$WORK/wga.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do
    [ -S /var/run/wireguard/$WGA.sock ] && [ -S /var/run/wireguard/$WGB.sock ] && break
    sleep 0.1
  done
  ip netns exec "$NS-gb" wg set "$WGB" listen-port 51820 private-key "$WORK/wb.key" \
    peer "$(cat "$WORK/wa.pub")" allowed-ips 10.1.0.0/24 endpoint 198.51.100.1:51820
  ip netns exec "$NS-ga" wg set "$WGA" listen-port 51820 private-key "$WORK/wa.key" \
    peer "$(cat "$WORK/wb.pub")" allowed-ips 10.2.0.0/24 endpoint 198.51.100.2:51820
  ip -n "$NS-gb" link set "$WGB" up
  ip -n "$NS-ga" link set "$WGA" up
  ip -n "$NS-gb" route add 10.1.0.0/24 dev "$WGB"
  ip -n "$NS-ga" route add 10.2.0.0/24 dev "$WGA"
  ip netns exec "$NS-ha" ping -c 1 -W 5 -q 10.2.0.2 > /dev/null
}
down_wireguard() { stop_all; }

declare -A best=([plain]=0 [ipsecgw]=0 [wireguard-go]=0)
for r in $(seq "$REPEAT"); do
  for path in plain ipsecgw wireguard-go; do
    fn=${path//-go/}
    "up_$fn"
    g=$(iperf)
    "down_$fn"
    echo "run $r: $path $g Gbit/s"
    best[$path]=$($PY -c "print(max(${best[$path]}, $g))")
  done
done
kill "$IPERF_SERVER" 2>/dev/null; wait "$IPERF_SERVER" 2>/dev/null || true

echo
echo "iperf3, 1 TCP stream, ${DURATION} s, best of $REPEAT, ipsecgw ESP $ESP in UDP 4500 ($(nproc) cores)"
printf "  %-14s %8s Gbit/s\n" plain "${best[plain]}" ipsecgw "${best[ipsecgw]}" wireguard-go "${best[wireguard-go]}"
$PY - "${best[plain]}" "${best[ipsecgw]}" "${best[wireguard-go]}" <<'PYEOF'
import sys
plain, gw, wg = map(float, sys.argv[1:])
ratio = lambda a, b: f"{a / b:.2f}x" if b > 0 else "n/a"
print(f"  ipsecgw / wireguard-go: {ratio(gw, wg)}")
print(f"  ipsecgw / plain:        {ratio(gw, plain)}")
PYEOF
