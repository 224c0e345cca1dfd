# Shared by the demo, the network-namespace tests and the benchmarks.
# Source it; it defines functions only. Background processes are started by
# the caller itself (so that $! is the real PID to end later).
#
# Topology (NS is a per-run prefix, e.g. "igw$$"):
#
#   NS-ha  10.1.0.2  fd01::2                            10.2.0.2  fd02::2  NS-hb
#     |  veth                                                       veth  |
#   NS-ga  10.1.0.1  fd01::1 ==== 198.51.100.1 / 2001:db8::1         NS-gb
#                              ---- veth "wan" ----  198.51.100.2 / 2001:db8::2
#                                                   10.2.0.1  fd02::1

netns_setup() {
  local ns=$1
  for n in ha ga gb hb; do ip netns add "$ns-$n"; done
  for n in ha ga gb hb; do ip -n "$ns-$n" link set lo up; done
  ip link add "$ns-a0" netns "$ns-ha" type veth peer name "$ns-a1" netns "$ns-ga"
  ip link add "$ns-w0" netns "$ns-ga" type veth peer name "$ns-w1" netns "$ns-gb"
  ip link add "$ns-b0" netns "$ns-hb" type veth peer name "$ns-b1" netns "$ns-gb"
  ip -n "$ns-ha" addr add 10.1.0.2/24 dev "$ns-a0"
  ip -n "$ns-ha" -6 addr add fd01::2/64 dev "$ns-a0" nodad
  ip -n "$ns-ga" addr add 10.1.0.1/24 dev "$ns-a1"
  ip -n "$ns-ga" -6 addr add fd01::1/64 dev "$ns-a1" nodad
  ip -n "$ns-ga" addr add 198.51.100.1/24 dev "$ns-w0"
  ip -n "$ns-ga" -6 addr add 2001:db8::1/64 dev "$ns-w0" nodad
  ip -n "$ns-gb" addr add 198.51.100.2/24 dev "$ns-w1"
  ip -n "$ns-gb" -6 addr add 2001:db8::2/64 dev "$ns-w1" nodad
  ip -n "$ns-gb" addr add 10.2.0.1/24 dev "$ns-b1"
  ip -n "$ns-gb" -6 addr add fd02::1/64 dev "$ns-b1" nodad
  ip -n "$ns-hb" addr add 10.2.0.2/24 dev "$ns-b0"
  ip -n "$ns-hb" -6 addr add fd02::2/64 dev "$ns-b0" nodad
  for pair in "ha a0" "ga a1" "ga w0" "gb w1" "gb b1" "hb b0"; do
    set -- $pair
    ip -n "$ns-$1" link set "$ns-$2" up
  done
  ip -n "$ns-ha" route add default via 10.1.0.1
  ip -n "$ns-ha" -6 route add default via fd01::1
  ip -n "$ns-hb" route add default via 10.2.0.1
  ip -n "$ns-hb" -6 route add default via fd02::1
  for g in ga gb; do
    ip netns exec "$ns-$g" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  done
}

# After netns_setup: gateway A moves behind an nftables masquerade NAT.
#   ga 192.168.77.1 (n0) -- (n1) 192.168.77.254 mid 198.51.100.254 (m0) -- (m1) 198.51.100.2 gb
netns_nat_a() {
  local ns=$1
  ip netns add "$ns-mid"
  ip -n "$ns-ga" link del "$ns-w0"
  ip link add "$ns-n0" netns "$ns-ga" type veth peer name "$ns-n1" netns "$ns-mid"
  ip link add "$ns-m0" netns "$ns-mid" type veth peer name "$ns-m1" netns "$ns-gb"
  ip -n "$ns-ga" addr add 192.168.77.1/24 dev "$ns-n0"
  ip -n "$ns-mid" addr add 192.168.77.254/24 dev "$ns-n1"
  ip -n "$ns-mid" addr add 198.51.100.254/24 dev "$ns-m0"
  ip -n "$ns-gb" addr add 198.51.100.2/24 dev "$ns-m1"
  for l in "ga n0" "mid n1" "mid m0" "gb m1"; do set -- $l; ip -n "$ns-$1" link set "$ns-$2" up; done
  ip -n "$ns-mid" link set lo up
  ip -n "$ns-ga" route add default via 192.168.77.254
  ip netns exec "$ns-mid" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$ns-mid" nft -f - <<NFT
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "$ns-m0" masquerade
  }
}
NFT
}

netns_teardown() {
  local ns=$1
  for n in ha ga gb hb mid peer gw; do
    ip netns del "$ns-$n" 2>/dev/null || true
  done
}

# Writes two gateway configurations for one manual SA pair.
# usage: write_pair_configs DIR ESP ENCAP OUTER(4|6) KEYLEN_BYTES
# DP_WORKERS and DP_OFFLOAD, when set, become "dataplane" of both; TUN_TXQ
# their tun.txqueuelen.
write_pair_configs() {
  local dir=$1 esp=$2 encap=$3 outer=$4 keylen=$5
  local ka kb la lb dp="" txq=""
  [ -n "${TUN_TXQ:-}" ] && txq=", \"txqueuelen\": $TUN_TXQ"
  if [ -n "${DP_WORKERS:-}" ] || [ -n "${DP_OFFLOAD:-}" ]; then
    dp="\"dataplane\": { \"workers\": ${DP_WORKERS:-0}, \"offload\": ${DP_OFFLOAD:-true} },"
  fi
  ka=$(openssl rand -hex "$keylen")
  kb=$(openssl rand -hex "$keylen")
  if [ "$outer" = 6 ]; then la=2001:db8::1; lb=2001:db8::2; else la=198.51.100.1; lb=198.51.100.2; fi
  cat > "$dir/gw-a.json" <<JSON
{
  $dp
  "tun": { "name": "ipsec0", "mtu": 1400$txq },
  "manual": {
    "lan": {
      "local_addr": "$la", "remote_addr": "$lb",
      "local_ts": ["10.1.0.0/24", "fd01::/64"], "remote_ts": ["10.2.0.0/24", "fd02::/64"],
      "mode": "tunnel", "protocol": "esp", "encap": "$encap", "esp": "$esp",
      "replay_window": 64,
      "out": { "spi": "0x00001001", "key": "$ka" },
      "in":  { "spi": "0x00002001", "key": "$kb" }
    }
  }
}
JSON
  cat > "$dir/gw-b.json" <<JSON
{
  $dp
  "tun": { "name": "ipsec0", "mtu": 1400$txq },
  "manual": {
    "lan": {
      "local_addr": "$lb", "remote_addr": "$la",
      "local_ts": ["10.2.0.0/24", "fd02::/64"], "remote_ts": ["10.1.0.0/24", "fd01::/64"],
      "mode": "tunnel", "protocol": "esp", "encap": "$encap", "esp": "$esp",
      "replay_window": 64,
      "out": { "spi": "0x00002001", "key": "$kb" },
      "in":  { "spi": "0x00001001", "key": "$ka" }
    }
  }
}
JSON
}

# Key length in bytes for an ESP keyword (encryption key + salt + integrity key).
esp_key_len() {
  case "$1" in
    aes128gcm16) echo 20 ;; aes256gcm16) echo 36 ;; chacha20poly1305) echo 36 ;;
    aes128-sha256) echo 48 ;; aes256-sha512) echo 96 ;; aes128ctr-sha256) echo 52 ;;
    aes128-sha1) echo 36 ;; 3des-md5) echo 40 ;; null-sha256) echo 32 ;;
    aes256-sha384) echo 80 ;; aes128gcm16-esn) echo 20 ;; aes256-sha256-esn) echo 64 ;;
    *) echo "unknown ESP keyword $1" >&2; return 1 ;;
  esac
}

# Waits until a file contains a pattern (bounded).
wait_for() {
  local file=$1 pattern=$2 tries=${3:-50}
  for _ in $(seq "$tries"); do
    grep -q "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Writes two gateway configurations that negotiate with IKEv2 (PSK): gw-a
# initiates at start, gw-b responds.
# usage: write_ike_pair_configs DIR IKE_PROPOSAL ESP_PROPOSAL
write_ike_pair_configs() {
  local dir=$1 ike=$2 esp=$3 psk
  psk=$(openssl rand -hex 24)
  for side in a b; do
    local la lb lts rts lid rid start
    if [ "$side" = a ]; then
      la=198.51.100.1; lb=198.51.100.2; lts='"10.1.0.0/24", "fd01::/64"'; rts='"10.2.0.0/24", "fd02::/64"'
      lid=gw-a.example; rid=gw-b.example; start=start
    else
      la=198.51.100.2; lb=198.51.100.1; lts='"10.2.0.0/24", "fd02::/64"'; rts='"10.1.0.0/24", "fd01::/64"'
      lid=gw-b.example; rid=gw-a.example; start=none
    fi
    cat > "$dir/gw-$side.json" <<JSON
{
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "connections": {
    "peer": {
      "local_addrs": ["$la"], "remote_addrs": ["$lb"],
      "local":  { "auth": "psk", "id": "$lid" },
      "remote": { "auth": "psk", "id": "$rid" },
      "proposals": ["$ike"],
      "dpd_delay": 10,
      "children": {
        "lan": { "local_ts": [$lts], "remote_ts": [$rts],
                 "esp_proposals": ["$esp"], "start_action": "$start" }
      }
    }
  },
  "secrets": { "peer": { "ids": ["gw-a.example", "gw-b.example"], "secret": "0x$psk" } }
}
JSON
  done
}

# stop_capture PID FILE: stops the tcpdump (started with -U -w FILE) once it
# has caught up, FILE unchanged for 0.5 s (at most 10 s): on a busy machine
# a capture lags behind the traffic, and stopping it at once loses the
# packets it has not read yet.
stop_capture() {
  local pid=$1 file=$2 last=-1 size _
  for _ in $(seq 20); do
    sleep 0.5
    size=$(stat -c %s "$file" 2>/dev/null || echo 0)
    [ "$size" = "$last" ] && break
    last=$size
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
}

# udp_transfer FROM_NS TO_ADDR TO_NS COUNT SIZE [PORT]: COUNT datagrams of
# SIZE bytes, each its sequence number and SHA-256-derived bytes, sent in
# bursts; the receiver checks every one. Prints "received intact corrupt"
# and succeeds when at least 95% arrived intact and none corrupt.
udp_transfer() {
  local from=$1 to_addr=$2 to_ns=$3 count=$4 size=$5 port=${6:-5002}
  cat > "$WORK/udpx.py" <<'PYEOF'
import hashlib, socket, sys, time
mode, addr, port, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def body(i):
    out, k = b"", 0
    while len(out) < size - 4:
        out += hashlib.sha256(b"%d/%d" % (i, k)).digest(); k += 1
    return i.to_bytes(4, "big") + out[:size - 4]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
if mode == "send":
    msgs = [body(i) for i in range(count)]
    for j in range(0, count, 64):  # bursts of 64: runs for the receiving gateway to coalesce
        for m in msgs[j:j + 64]:
            s.sendto(m, (addr, port))
        time.sleep(0.005)
    sys.exit(0)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root): past net.core.rmem_max
s.bind((addr, port))
open(sys.argv[6], "w").close()  # bound: the sender may start
s.settimeout(20)  # the sender's start; then 3 s without a datagram ends it
got, intact, bad = set(), 0, 0
try:
    while len(got) < count:
        d = s.recv(65536)
        s.settimeout(3)
        i = int.from_bytes(d[:4], "big")
        if i < count and i not in got and d == body(i):
            got.add(i); intact += 1
        else:
            bad += 1
except socket.timeout:
    pass
print(len(got) + bad, intact, bad)
PYEOF
  rm -f "$WORK/udp-ready"
  timeout 60 ip netns exec "$to_ns" $PY "$WORK/udpx.py" recv "$to_addr" "$port" "$count" "$size" "$WORK/udp-ready" \
    > "$WORK/udp-got" &
  local rx=$! _
  for _ in $(seq 100); do [ -f "$WORK/udp-ready" ] && break; sleep 0.1; done
  timeout 30 ip netns exec "$from" $PY "$WORK/udpx.py" send "$to_addr" "$port" "$count" "$size"
  wait $rx
  local r; r=$(cat "$WORK/udp-got")
  echo "     UDP datagrams received, intact, corrupt: $r"
  set -- $r
  [ "${3:-1}" -eq 0 ] && [ "$(( ${2:-0} * 100 ))" -ge "$(( count * 95 ))" ]
}

# TCP transfer of N random bytes from namespace $1 to address $2 in namespace
# $3 (port $5, default 5001); true when the SHA-256 on both ends agree. Uses
# the caller's $WORK (a scratch folder) and $PY (Debian's python3).
tcp_transfer() {
  local from=$1 to_addr=$2 to_ns=$3 size=$4 port=${5:-5001}
  head -c "$size" /dev/urandom > "$WORK/payload"
  local want got
  want=$(sha256sum < "$WORK/payload" | cut -d' ' -f1)
  timeout 30 ip netns exec "$to_ns" $PY -c "
import socket, hashlib, sys
fam = socket.AF_INET6 if ':' in '$to_addr' else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$to_addr', $port)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b)
print(h.hexdigest())" > "$WORK/got" &
  local rx=$!
  sleep 0.5
  timeout 30 ip netns exec "$from" $PY -c "
import socket
fam = socket.AF_INET6 if ':' in '$to_addr' else socket.AF_INET
s = socket.create_connection(('$to_addr', $port), timeout=20)
s.sendall(open('$WORK/payload', 'rb').read()); s.close()"
  wait $rx
  got=$(cat "$WORK/got")
  [ -n "$got" ] && [ "$got" = "$want" ]
}


# The harness the namespace tests share. `test_init PREFIX` sets NS (PREFIX
# and the PID, so parallel runs never collide), WORK (a scratch folder),
# PIDS (processes to end, by PID), PASS and FAIL, and an EXIT trap that ends
# those processes, removes the namespaces and WORK (kept when KEEP is set).
test_init() {
  NS=$1$$
  WORK=$(mktemp -d)
  PIDS=()
  GATEWAYS=()
  PASS=0
  FAIL=0
  trap test_cleanup EXIT
}

# A test that cannot run here says why. Under CI (CI=true) that is a
# failure; elsewhere it exits 77, which ctest reports as skipped
# (SKIP_RETURN_CODE), never as passed.
skip_test() {
  if [ "${CI:-}" = true ]; then echo "FAILED: cannot run in CI: $*"; exit 1; fi
  echo "SKIPPED: $*"
  exit 77
}
require_root() { [ "$(id -u)" -eq 0 ] || skip_test "needs root for network namespaces"; }
require_tools() {  # require_tools CMD... (a path, or a name on PATH)
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 ||
      skip_test "$t is not installed (scripts/install-deps.sh test installs it)"
  done
}

# check "what" command...: runs it quietly; prints ok, or FAIL and its output.
check() {
  local what=$1; shift
  if "$@" > "$WORK/check.out" 2>&1; then
    PASS=$((PASS + 1)); echo "ok   $what"
  else
    FAIL=$((FAIL + 1)); echo "FAIL $what"; sed 's/^/     | /' "$WORK/check.out" | tail -20
  fi
}
# no_match PATTERN FILE...: true when the files exist and none holds PATTERN
# (a negative grep that fails when grep itself fails, e.g. on a missing file).
no_match() {
  local pat=$1; shift
  grep -qE -- "$pat" "$@"
  [ $? -eq 1 ]
}

# exits_with N command...: true when the command exits with status N (a
# negative check that still fails when the command cannot run at all).
exits_with() {
  local want=$1; shift
  "$@"
  [ $? -eq "$want" ]
}

# An ipsecgw started in the background: `track_gw $! LOG`. When it is
# stopped (stop_gw, stop_all) its exit status must be 0 (a clean shutdown on
# SIGTERM) and its log must hold no sanitizer report; either is a failure.
track_gw() { PIDS+=("$1"); GATEWAYS+=("$1:$2"); }
sanitizer_report() {  # sanitizer_report LOG: prints the report's lines, if any
  grep -E 'ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|runtime error:|SUMMARY: [A-Za-z]+Sanitizer' "$1" 2>/dev/null | head -20
}
gw_finished() {  # gw_finished PID STATUS
  local g log
  for g in "${GATEWAYS[@]}"; do
    [ "${g%%:*}" = "$1" ] || continue
    log=${g#*:}
    if [ "$2" -eq 0 ] && [ -z "$(sanitizer_report "$log")" ]; then
      PASS=$((PASS + 1)); echo "ok   ipsecgw (pid $1) exited 0, no sanitizer report in $(basename "$log")"
    else
      FAIL=$((FAIL + 1)); echo "FAIL ipsecgw (pid $1) exited $2 ($(basename "$log"))"
      sanitizer_report "$log" | sed 's/^/     | /'
      tail -5 "$log" | sed 's/^/     | /'
    fi
  done
  local keep=()
  for g in "${GATEWAYS[@]}"; do [ "${g%%:*}" = "$1" ] || keep+=("$g"); done
  GATEWAYS=("${keep[@]}")
}
stop_gw() {  # stop_gw PID: SIGTERM, wait, check
  local rc
  kill -TERM "$1" 2>/dev/null
  wait "$1" 2>/dev/null; rc=$?
  gw_finished "$1" "$rc"
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
stop_all() {
  local p rc
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null; rc=$?
    gw_finished "$p" "$rc"
  done
  PIDS=()
}
test_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  netns_teardown "$NS"
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
# Stops what is still running (checking the gateways), prints the summary
# line and returns the exit status.
test_finish() {
  stop_all
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}
