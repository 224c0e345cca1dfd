#!/usr/bin/env bash
# Throughput between two hosts, each behind a gateway, through every path in
# the same run on the same namespaces, interleaved, REPEAT times each,
# medians printed with the ratios issue 13 asks for:
#   plain          routing, no tunnel
#   ipsecgw        an ipsecgw pair, ESP ($ESP) in UDP 4500 (manual keys)
#   ipsecgw-raw    the same over raw ESP (IP protocol 50)
#   ipsecgw-chacha ChaCha20-Poly1305 in UDP; ipsecgw-cbc AES-128-CBC/HMAC-SHA-256 in UDP
#   ipsecgw-1w     one worker, no offloads (the data plane before issue 13)
#   strongswan     charon 5.9.8 with kernel-libipsec on both gateways (IKEv2
#                  PSK, the same ESP suite; libipsec always uses UDP 4500)
#   wireguard-go   Debian's wireguard-go
# For each: iperf3 TCP with 1 and 4 streams, UDP goodput and loss sent as
# fast as one iperf3 can (and, for ipsecgw, offered at 5x strongSwan's
# goodput by UDP_PROCS (4) iperf3 processes at once), ping
# RTT under a saturating TCP stream, and the gateways' CPU seconds per
# Gbit/s moved (user + system time of the gateway processes). Run as root.
#
#   DURATION=8 REPEAT=3 bench/throughput.sh
#   PATHS="plain ipsecgw strongswan" bench/throughput.sh
#   UDP5X_RATE=720M bench/throughput.sh   # only UDP at that offer: ipsecgw and plain
#   PROFILE=/tmp/prof PATHS=ipsecgw REPEAT=1 bench/throughput.sh   # perf profiles
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ESP=${ESP:-aes128gcm16}
DURATION=${DURATION:-8}
REPEAT=${REPEAT:-3}
PATHS=${PATHS:-"plain ipsecgw ipsecgw-raw ipsecgw-chacha ipsecgw-cbc ipsecgw-1w strongswan wireguard-go"}
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
GWPIDS=()  # the gateway processes of the path under test (for CPU time)
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  GWPIDS=()
}
IPERF_SERVER=""
UDP_SERVERS=()
stop_servers() {
  for s in $IPERF_SERVER "${UDP_SERVERS[@]}"; do kill "$s" 2>/dev/null || true; done
  for s in $IPERF_SERVER "${UDP_SERVERS[@]}"; do wait "$s" 2>/dev/null || true; done
  IPERF_SERVER=""; UDP_SERVERS=()
}
cleanup() { stop_all; stop_servers; netns_teardown "$NS"; rm -rf "$WORK"; }
trap cleanup EXIT

netns_setup "$NS"
ip netns exec "$NS-hb" iperf3 -s -B 10.2.0.2 > /dev/null 2>&1 &
IPERF_SERVER=$!
# UDP at 5x strongSwan's goodput is sent by UDP_PROCS iperf3 processes at
# once (iperf3 3.12 is single-threaded: one process tops out near 1 Gbit/s
# even on plain routing), each to its own server.
UDP_PROCS=${UDP_PROCS:-4}
for k in $(seq "$UDP_PROCS"); do
  ip netns exec "$NS-hb" iperf3 -s -B 10.2.0.2 -p $((5300 + k)) > /dev/null 2>&1 &
  UDP_SERVERS+=($!)
done
sleep 0.5

cpu_ticks() {  # the gateways' user + system clock ticks so far
  local t=0 p
  for p in "${GWPIDS[@]}"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# iperf3 from host A to host B; prints "Gbit/s loss% cpu_s_per_gbit".
iperf() {  # iperf ARGS...
  local t0 t1
  t0=$(cpu_ticks)
  ip netns exec "$NS-ha" timeout $((DURATION + 20)) iperf3 -c 10.2.0.2 -t "$DURATION" -O 1 -J "$@" \
    > "$WORK/iperf.json" 2>/dev/null || { echo "0 100 0"; return; }
  t1=$(cpu_ticks)
  $PY - "$WORK/iperf.json" "$((t1 - t0))" "$(getconf CLK_TCK)" "${#GWPIDS[@]}" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
ticks, hz, gws = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
end = j["end"]
if "sum_received" in end:
    gbps, loss = end["sum_received"]["bits_per_second"] / 1e9, 0.0
else:  # UDP: the receiver's goodput and loss
    s = end["sum"]
    gbps = s["bits_per_second"] * (1 - s.get("lost_percent", 0) / 100) / 1e9
    loss = s.get("lost_percent", 0.0)
secs = j["start"]["test_start"]["duration"]
moved = gbps * secs
cpu = (ticks / hz) / moved if gws and moved > 0 else 0
print(f"{gbps:.3f} {loss:.2f} {cpu:.3f}")
PYEOF
}

# UDP from UDP_PROCS iperf3 processes at once, RATE (bits/s, "0": as fast
# as each can) split between them; prints "Gbit/s loss% cpu_s_per_gbit"
# for their sum (loss: of all datagrams sent).
iperf_udp() {  # iperf_udp RATE
  local t0 t1 k rate=$1 each pids=()
  each=$($PY -c "
r = '$rate'
m = {'K': 1e3, 'M': 1e6, 'G': 1e9}
v = float(r[:-1]) * m[r[-1]] if r[-1] in m else float(r)
print(int(v / $UDP_PROCS))")
  t0=$(cpu_ticks)
  for k in $(seq "$UDP_PROCS"); do
    ip netns exec "$NS-ha" timeout $((DURATION + 20)) iperf3 -c 10.2.0.2 -p $((5300 + k)) -u -b "$each" -l 1300 -w 4M \
      -t "$DURATION" -O 1 -J > "$WORK/iperf-u$k.json" 2>/dev/null &
    pids+=($!)
  done
  for k in "${pids[@]}"; do wait "$k" 2>/dev/null || true; done
  t1=$(cpu_ticks)
  $PY - "$((t1 - t0))" "$(getconf CLK_TCK)" "${#GWPIDS[@]}" "$WORK"/iperf-u*.json <<'PYEOF'
import json, sys
ticks, hz, gws = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bits = sent = lost = 0
secs = 0
for f in sys.argv[4:]:
    try:
        j = json.load(open(f))
        s = j["end"]["sum"]
        secs = max(secs, j["start"]["test_start"]["duration"])
    except (OSError, ValueError, KeyError):
        continue
    bits += s["bits_per_second"] * (1 - s.get("lost_percent", 0) / 100)
    sent += s.get("packets", 0)
    lost += s.get("lost_packets", 0)
gbps = bits / 1e9
loss = 100.0 * lost / sent if sent else 100.0
moved = gbps * secs
cpu = (ticks / hz) / moved if gws and moved > 0 else 0
print(f"{gbps:.3f} {loss:.2f} {cpu:.3f}")
PYEOF
  rm -f "$WORK"/iperf-u*.json
}

# Median ping RTT (ms) while one TCP stream saturates the path.
ping_under_load() {
  ip netns exec "$NS-ha" timeout $((DURATION + 20)) iperf3 -c 10.2.0.2 -t "$DURATION" > /dev/null 2>&1 &
  local load=$!
  sleep 1
  ip netns exec "$NS-ha" ping -c $((DURATION * 10 - 20)) -i 0.1 -W 2 10.2.0.2 2>/dev/null |
    $PY -c "
import re, statistics, sys
rtts = [float(m.group(1)) for m in re.finditer(r'time=([0-9.]+)', sys.stdin.read())]
print('%.3f' % statistics.median(rtts) if rtts else 'nan')"
  wait "$load" 2>/dev/null || true
}

# --- the paths; each up_X/down_X pair leaves the namespaces as found.
up_plain() {
  ip -n "$NS-ga" route add 10.2.0.0/24 via 198.51.100.2
  ip -n "$NS-gb" route add 10.1.0.0/24 via 198.51.100.1
}
down_plain() {
  ip -n "$NS-ga" route del 10.2.0.0/24 via 198.51.100.2
  ip -n "$NS-gb" route del 10.1.0.0/24 via 198.51.100.1
}

start_pair() {  # start_pair DIR
  rm -f "$WORK/a-stats.json" "$WORK/b-stats.json"
  ip netns exec "$NS-ga" "$IPSECGW" run -c "$1/gw-a.json" --stats-file "$WORK/a-stats.json" --log-level warning > "$WORK/a.log" 2>&1 &
  PIDS+=($!); GWPIDS+=($!)
  ip netns exec "$NS-gb" "$IPSECGW" run -c "$1/gw-b.json" --stats-file "$WORK/b-stats.json" --log-level warning > "$WORK/b.log" 2>&1 &
  PIDS+=($!); GWPIDS+=($!)
  for _ in $(seq 50); do
    ip -n "$NS-ga" link show ipsec0 >/dev/null 2>&1 && ip -n "$NS-gb" link show ipsec0 >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 0.5
  ip netns exec "$NS-ha" ping -c 1 -W 2 -q 10.2.0.2 > /dev/null
}
for v in udp raw chacha cbc 1w; do mkdir -p "$WORK/$v"; done
write_pair_configs "$WORK/udp" "$ESP" udp 4 "$(esp_key_len "$ESP")"
write_pair_configs "$WORK/raw" "$ESP" none 4 "$(esp_key_len "$ESP")"
write_pair_configs "$WORK/chacha" chacha20poly1305 udp 4 "$(esp_key_len chacha20poly1305)"
write_pair_configs "$WORK/cbc" aes128-sha256 udp 4 "$(esp_key_len aes128-sha256)"
DP_WORKERS=${ONEW_WORKERS:-1} DP_OFFLOAD=${ONEW_OFFLOAD:-false} write_pair_configs "$WORK/1w" "$ESP" udp 4 "$(esp_key_len "$ESP")"
up_ipsecgw() { start_pair "$WORK/udp"; }
up_ipsecgw-raw() { start_pair "$WORK/raw"; }
up_ipsecgw-chacha() { start_pair "$WORK/chacha"; }
up_ipsecgw-cbc() { start_pair "$WORK/cbc"; }
up_ipsecgw-1w() { start_pair "$WORK/1w"; }
# How often a packet crossed to another worker (its SA's owner) on the way.
handoff_share() {
  $PY -c "
import json, sys
n = h = 0
for f in sys.argv[1:]:
    try:
        s = json.load(open(f))
    except (OSError, ValueError):
        continue
    t = s['totals']
    n += t.get('packets_out', 0) + t.get('packets_in', 0)
    h += s.get('dataplane', {}).get('handoffs', 0)
print('%.1f%%' % (100.0 * h / n) if n else 'n/a')" "$WORK/a-stats.json" "$WORK/b-stats.json"
}
for v in ipsecgw ipsecgw-raw ipsecgw-chacha ipsecgw-cbc ipsecgw-1w; do
  eval "down_$v() { kill -USR1 \"\${GWPIDS[@]}\" 2> /dev/null || true; sleep 0.3; echo \"   $v: packets handed to another worker: \$(handoff_share)\" >&2; stop_all; }"
done

# strongSwan: a charon with kernel-libipsec in each gateway's namespace,
# each with its own strongswan.conf, /run and vici socket.
start_charon() {  # start_charon ga|gb LOCAL REMOTE LOCAL_TS REMOTE_TS
  local g=$1 dir="$WORK/sw-$1"
  rm -rf "$dir"; mkdir -p "$dir/run"
  cat > "$dir/strongswan.conf" <<CONF
charon {
  load_modular = yes
  plugins {
    include /etc/strongswan.d/charon/*.conf
    kernel-libipsec { load = 2 }
    stroke { load = no }
    vici { socket = unix://$dir/charon.vici }
  }
  filelog { bench { path = $dir/charon.log
                    default = 0 } }
}
CONF
  cat > "$dir/swanctl.conf" <<CONF
connections { bench { version = 2
  local_addrs = $2
  remote_addrs = $3
  proposals = aes128gcm16-prfsha256-x25519
  local { auth = psk
          id = $2 }
  remote { auth = psk
           id = $3 }
  children { lan { local_ts = $4
                   remote_ts = $5
                   esp_proposals = $ESP
                   start_action = none } } } }
secrets { ike-b { id-a = 198.51.100.1
                  id-b = 198.51.100.2
                  secret = "bench secret" } }
CONF
  ip netns exec "$NS-$g" unshare -m --propagation private sh -c \
    "mount --bind '$dir/run' /run && exec env STRONGSWAN_CONF='$dir/strongswan.conf' /usr/lib/ipsec/charon" \
    > "$dir/charon.out" 2>&1 &
  PIDS+=($!); GWPIDS+=($!)
  for _ in $(seq 100); do [ -S "$dir/charon.vici" ] && break; sleep 0.1; done
  swanctl --load-all --file "$dir/swanctl.conf" --uri "unix://$dir/charon.vici" > /dev/null 2>&1
}
up_strongswan() {
  start_charon gb 198.51.100.2 198.51.100.1 10.2.0.0/24 10.1.0.0/24
  start_charon ga 198.51.100.1 198.51.100.2 10.1.0.0/24 10.2.0.0/24
  swanctl --initiate --ike bench --child lan --uri "unix://$WORK/sw-ga/charon.vici" > /dev/null 2>&1
  for _ in $(seq 50); do
    ip netns exec "$NS-ha" ping -c 1 -W 1 -q 10.2.0.2 > /dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "strongSwan tunnel did not come up" >&2
}
down_strongswan() { stop_all; }

WGA=wga$$ WGB=wgb$$
wg genkey > "$WORK/wa.key"; wg pubkey < "$WORK/wa.key" > "$WORK/wa.pub"
wg genkey > "$WORK/wb.key"; wg pubkey < "$WORK/wb.key" > "$WORK/wb.pub"
up_wireguard-go() {
  # Responder (B) first, or the first handshake is lost for 5 s.
  ip netns exec "$NS-gb" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$WGB" > "$WORK/wgb.log" 2>&1 &
  PIDS+=($!); GWPIDS+=($!)
  ip netns exec "$NS-ga" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$WGA" > "$WORK/wga.log" 2>&1 &
  PIDS+=($!); GWPIDS+=($!)
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
down_wireguard-go() { stop_all; }

# Which measurements each path gets (the extra ESP suites: TCP only).
measures() {
  case $1 in
    ipsecgw-chacha|ipsecgw-cbc|ipsecgw-raw|ipsecgw-1w) echo "tcp1 tcp4" ;;
    *) echo "tcp1 tcp4 udp ping" ;;
  esac
}

RES=$WORK/results.txt  # path measure run value [loss cpu]
: > "$RES"
for r in $(seq "$REPEAT"); do
  [ -n "${UDP5X_RATE:-}" ] && break
  for path in $PATHS; do
    "up_$path"
    for m in $(measures "$path"); do
      # PROFILE=DIR: perf record -a -g over ipsecgw's first TCP x1 and UDP
      # runs, into DIR/ipsecgw-MEASURE.data (perf report reads them).
      prof=""
      if [ -n "${PROFILE:-}" ] && [ "$path" = ipsecgw ] && [ "$r" = 1 ] && [[ $m == tcp1 || $m == udp ]]; then
        mkdir -p "$PROFILE"
        perf record -a -g -q -o "$PROFILE/$path-$m.data" -- sleep "$((DURATION + 1))" > /dev/null 2>&1 &
        prof=$!
      fi
      case $m in
        tcp1) read -r g l c < <(iperf) ;;
        tcp4) read -r g l c < <(iperf -P 4) ;;
        udp) read -r g l c < <(iperf -u -b 0 -l 1300) ;;
        ping) g=$(ping_under_load); l=0; c=0 ;;
      esac
      [ -n "$prof" ] && wait "$prof"
      echo "$path $m $r $g $l $c" >> "$RES"
      echo "run $r: $path $m $g (loss $l%, cpu ${c}s/Gbit)"
    done
    "down_$path"
  done
done
# Every place on these hosts that counts a dropped packet, as "name value"
# lines: each namespace's links (rx/tx dropped), its UDP receive/send
# buffer errors, the TUN devices' drops, and the per-CPU backlog drops of
# /proc/net/softnet_stat (netdev_max_backlog, shared by all namespaces).
drop_census() {
  local n
  for n in ha ga gb hb; do
    ip netns exec "$NS-$n" ip -s -j link show 2> /dev/null | $PY -c "
import json, sys
for l in json.load(sys.stdin):
    s = l.get('stats64', {})
    for k in ('rx', 'tx'):
        print('$n', l['ifname'], k + '_dropped', s.get(k, {}).get('dropped', 0))"
    ip netns exec "$NS-$n" awk -v ns="$n" '/^Udp:/ { n++; if (n == 1) { for (i = 1; i <= NF; i++) col[$i] = i }
      else { print ns, "udp RcvbufErrors", $col["RcvbufErrors"]; print ns, "udp SndbufErrors", $col["SndbufErrors"]; exit } }' /proc/net/snmp
  done
  $PY -c "print('host softnet backlog_dropped', sum(int(l.split()[1], 16) for l in open('/proc/net/softnet_stat')))"
}
census_diff() {  # census_diff BEFORE AFTER: the counters that grew
  $PY - "$1" "$2" <<'PYEOF'
import sys
def read(f):
    d = {}
    for line in open(f):
        *k, v = line.split()
        d[" ".join(k)] = int(v)
    return d
a, b = read(sys.argv[1]), read(sys.argv[2])
grew = {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0) > 0}
print(", ".join(f"{k} +{v}" for k, v in sorted(grew.items())) or "none")
PYEOF
}

# ipsecgw's UDP at five times strongSwan's goodput: the loss there.
# UDP5X_RATE (e.g. 720M) skips the other measurements and offers that.
if [ -n "${UDP5X_RATE:-}" ] || [[ " $PATHS " == *" strongswan "* && " $PATHS " == *" ipsecgw "* ]]; then
  sw_udp=${UDP5X_RATE:-$($PY -c "
import statistics
v=[float(l.split()[3]) for l in open('$RES') if l.split()[:2]==['strongswan','udp']]
print('%dM' % max(1, int(statistics.median(v) * 5 * 1000)))")}
  # The same offer over plain routing, interleaved: what these cores carry
  # at that offer with no tunnel at all (the senders and receivers share
  # them with the gateways).
  for r in $(seq "$REPEAT"); do
    for path in ipsecgw plain; do
      "up_$path"
      drop_census > "$WORK/census0.txt"
      read -r g l c < <(iperf_udp "$sw_udp")
      drop_census > "$WORK/census1.txt"
      echo "$path udp5x $r $g $l $c" >> "$RES"
      echo "run $r: $path UDP at $sw_udp from $UDP_PROCS senders: $g Gbit/s (loss $l%)"
      echo "   dropped on the hosts: $(census_diff "$WORK/census0.txt" "$WORK/census1.txt")"
      if [ "$path" = ipsecgw ]; then
        kill -USR1 "${GWPIDS[@]}" 2> /dev/null || true
        sleep 0.3
        echo "   ipsecgw: $($PY -c "
import json, sys
for f in sys.argv[1:]:
    s = json.load(open(f))
    d = {k: v for k, v in s['totals']['drops'].items() if v}
    dp = {k: v for k, v in s.get('dataplane', {}).items() if k in ('handoffs', 'handoff_full', 'socket_rx_discarded') and v}
    print(f.rsplit('/', 1)[-1][0], 'drops', d, dp, 'tun_write_failed', s.get('tun_write_failed', 0), end='; ')
" "$WORK/a-stats.json" "$WORK/b-stats.json" 2>&1)"
      fi
      "down_$path"
    done
  done
fi
stop_servers

echo
echo "Medians of $REPEAT runs, ${DURATION} s each, ipsecgw ESP $ESP, $(nproc) cores, $(uname -r)"
$PY - "$RES" <<'PYEOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    path, m, run, g, loss, cpu = line.split()
    rows[(path, m)].append((float(g), float(loss), float(cpu)))
def med(path, m, i=0):
    v = [r[i] for r in rows.get((path, m), [])]
    return statistics.median(v) if v else float("nan")
paths = []
for (p, _m) in rows:
    if p not in paths:
        paths.append(p)
print(f"  {'path':15} {'TCP x1':>8} {'TCP x4':>8} {'UDP':>8} {'loss%':>6} {'RTT ms':>7} {'CPU s/Gbit':>10}")
for p in paths:
    print(f"  {p:15} {med(p,'tcp1'):8.3f} {med(p,'tcp4'):8.3f} {med(p,'udp'):8.3f} {med(p,'udp',1):6.2f} "
          f"{med(p,'ping'):7.3f} {med(p,'tcp1',2):10.3f}")
for p in ("ipsecgw", "plain"):
    if (p, "udp5x") in rows:
        print(f"  {p} UDP offered at 5x strongSwan's goodput: {med(p,'udp5x'):.3f} Gbit/s, "
              f"loss {med(p,'udp5x',1):.2f}%")
def ratio(a, b):
    return f"{a / b:.2f}x" if b and b == b and a == a else "n/a"
gw = med("ipsecgw", "tcp1")
print("Ratios (targets in brackets):")
print(f"  TCP x1 ipsecgw / strongSwan:     {ratio(gw, med('strongswan','tcp1'))}  [>= 10x]")
print(f"  TCP x1 ipsecgw / wireguard-go:   {ratio(gw, med('wireguard-go','tcp1'))}  [>= 3x]")
print(f"  TCP x4 / x1 (ipsecgw):           {ratio(med('ipsecgw','tcp4'), gw)}  [>= 1x]")
print(f"  UDP ipsecgw / strongSwan:        {ratio(med('ipsecgw','udp'), med('strongswan','udp'))}  [>= 5x, loss < 1% at 5x: see above]")
print(f"  RTT under load ipsecgw / strongSwan: {ratio(med('ipsecgw','ping'), med('strongswan','ping'))}  [<= 2x]")
for p in ("ipsecgw-raw", "ipsecgw-chacha", "ipsecgw-cbc"):
    print(f"  TCP x1 {p} / ipsecgw: {ratio(med(p,'tcp1'), gw):>6}  [>= 0.5x]")
print(f"  TCP x1 ipsecgw / ipsecgw-1w (one worker, no offloads): {ratio(gw, med('ipsecgw-1w','tcp1'))}")
print(f"  TCP x1 ipsecgw / plain:          {ratio(gw, med('plain','tcp1'))}")
PYEOF
