#!/usr/bin/env bash
# IKE SA setups per second with ipsecgw as responder and with strongSwan
# (charon 5.9.8, kernel-libipsec) as responder, driven by the same initiator
# (build/bench/ike_bench, ipsecgw's engine) in the same run, PSK and
# Curve25519. Prints both rates and the ratio. Run as root.
# IKE_VERSION=1 measures IKEv1 instead: Main Mode + Quick Mode per setup.
#
#   COUNT=1000 WINDOW=16 bench/ike_setup_rate.sh
#   IKE_VERSION=1 COUNT=1000 bench/ike_setup_rate.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
COUNT=${COUNT:-1000}
WINDOW=${WINDOW:-16}
IKE_VERSION=${IKE_VERSION:-2}
if [ "$IKE_VERSION" = 1 ]; then PROPOSAL=${PROPOSAL:-aes128-sha256-x25519}; else PROPOSAL=${PROPOSAL:-aes128gcm16-prfsha256-x25519}; fi
source scripts/as-root.sh "$@"
bash scripts/install-deps.sh test
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target ipsecgw ike_bench >/dev/null
IPSECGW=$root/build/cli/ipsecgw
BENCH=$root/build/bench/ike_bench
PY=/usr/bin/python3

NS=igwi$$
WORK=$(mktemp -d)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  ip netns del "$NS-c" 2>/dev/null || true
  ip netns del "$NS-s" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS-c"; ip netns add "$NS-s"
ip link add "$NS-0" netns "$NS-c" type veth peer name "$NS-1" netns "$NS-s"
ip -n "$NS-c" addr add 198.51.100.1/24 dev "$NS-0"
ip -n "$NS-s" addr add 198.51.100.2/24 dev "$NS-1"
for n in c s; do ip -n "$NS-$n" link set lo up; done
ip -n "$NS-c" link set "$NS-0" up; ip -n "$NS-s" link set "$NS-1" up
# The responders' local_ts needs an address of its own for strongSwan's route.
ip -n "$NS-s" addr add 10.2.0.1/32 dev lo

drive() {  # prints the driver's JSON line
  ip netns exec "$NS-c" ${DRIVER_WRAP:-} "$BENCH" --count "$COUNT" --window "$WINDOW" --proposal "$PROPOSAL" --version "$IKE_VERSION" \
    --local-id client.example --remote-id server.example --psk "bench secret" --timeout 300
}

# --- ipsecgw as responder
cat > "$WORK/gw.json" <<JSON
{
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "udp_encap": { "keepalive": 0 },
  "connections": {
    "bench": {
      "version": $IKE_VERSION,
      "local_addrs": ["198.51.100.2"], "remote_addrs": ["198.51.100.1"],
      "local": { "auth": "psk", "id": "server.example" },
      "remote": { "auth": "psk", "id": "client.example" },
      "proposals": ["$PROPOSAL"], "rekey_time": 0,
      "children": { "lan": { "local_ts": ["10.2.0.0/24"], "remote_ts": ["10.1.0.0/24"],
                             "esp_proposals": ["aes128gcm16"], "rekey_time": 0 } }
    }
  },
  "secrets": { "bench": { "ids": ["client.example", "server.example"], "secret": "bench secret" } }
}
JSON
ip netns exec "$NS-s" ${RESPONDER_WRAP:-} "$IPSECGW" run -c "$WORK/gw.json" --log-level warning > "$WORK/gw.log" 2>&1 &
PIDS+=($!)
sleep 1
gw=$(drive)
stop_all
echo "ipsecgw responder:    $gw"

if [ -n "${ONLY_IPSECGW:-}" ]; then exit 0; fi  # profiling ipsecgw alone (RESPONDER_WRAP="perf record ...")

# --- strongSwan as responder
mkdir -p "$WORK/run"
cat > "$WORK/strongswan.conf" <<CONF
charon {
  # All SAs come from one address here: lift the per-peer half-open limits
  # (defaults 5 and 10) so strongSwan is not measured dropping them.
  block_threshold = 10000
  cookie_threshold = 10000
  load_modular = yes
  plugins {
    include /etc/strongswan.d/charon/*.conf
    kernel-libipsec { load = 2 }
    stroke { load = no }
    vici { socket = unix://$WORK/charon.vici }
  }
  filelog {
    test {
      path = $WORK/charon.log
      default = ${CHARON_LOG_LEVEL:-0}
    }
  }
}
CONF
cat > "$WORK/swanctl.conf" <<CONF
connections {
  bench {
    version = $IKE_VERSION
    local_addrs = 198.51.100.2
    remote_addrs = 198.51.100.1
    proposals = $PROPOSAL
    local { auth = psk
            id = server.example }
    remote { auth = psk
             id = client.example }
    children { lan { local_ts = 10.2.0.0/24
                     remote_ts = 10.1.0.0/24
                     esp_proposals = aes128gcm16 } }
  }
}
secrets { ike-b { id-a = client.example
                  id-b = server.example
                  secret = "bench secret" } }
CONF
ip netns exec "$NS-s" unshare -m --propagation private sh -c \
  "mount --bind '$WORK/run' /run && exec env STRONGSWAN_CONF='$WORK/strongswan.conf' /usr/lib/ipsec/charon" \
  > "$WORK/charon.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$WORK/charon.vici" ] && break; sleep 0.1; done
swanctl --load-all --file "$WORK/swanctl.conf" --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
sw=$(drive)
stop_all
[ -n "${KEEP:-}" ] && cp "$WORK/charon.log" /tmp/ike-bench-charon.log
echo "strongSwan responder: $sw"

$PY - "$gw" "$sw" "$COUNT" "$WINDOW" "$PROPOSAL" "$IKE_VERSION" <<'PY'
import json, sys
gw, sw = json.loads(sys.argv[1]), json.loads(sys.argv[2])
what = "IKEv1 Main Mode PSK + Quick Mode" if sys.argv[6] == "1" else "IKE_SA_INIT + IKE_AUTH PSK + 1 Child SA"
print(f"IKE SA setups ({what}, {sys.argv[5]}), "
      f"{sys.argv[3]} SAs, {sys.argv[4]} in flight:")
print(f"  ipsecgw responder    {gw['rate']:8.1f} /s  ({gw['established']} ok, {gw['failed']} failed)")
print(f"  strongSwan responder {sw['rate']:8.1f} /s  ({sw['established']} ok, {sw['failed']} failed)")
if sw["rate"] > 0:
    print(f"  ratio ipsecgw / strongSwan: {gw['rate'] / sw['rate']:.2f}x")
PY
