#!/usr/bin/env bash
# Two ipsecgw gateways in transport mode (ESP, RFC 4303 3.1.1, then AH,
# RFC 4302 3.1.1) protecting their own traffic: ping and checksummed TCP
# transfers both ways between the gateways' own addresses, IPv4 and IPv6,
# with only ESP (IP protocol 50) or only AH (51) on the link; a replayed
# packet and a flipped bit are dropped and counted; a packet from another
# address of the host does not go out in the SA. Then an L2TP-style SA for
# udp/1701 only, ESP transport through a NAT, and an AH+ESP bundle in
# tunnel mode between the networks behind the gateways. Needs root; bounded by timeouts; cleans up
# after itself.
set -uo pipefail
IPSECGW=${1:?usage: transport_test.sh path/to/ipsecgw}
IPSECGW=$(readlink -f "$IPSECGW")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
PY=/usr/bin/python3
require_root
require_tools tcpdump "$PY" openssl nft

test_init igwx

stat_of() {  # stat_of FILE KEY -> totals.drops.KEY
  $PY -c "import json,sys; print(json.load(open('$1'))['totals']['drops']['$2'])"
}

run_transport() {
  PROTO=$1
  echo "== transport mode, ${PROTO^^}"
  netns_teardown "$NS"
  netns_setup "$NS"
  if [ "$PROTO" = ah ]; then
    ALG4='"protocol": "ah", "ah": "sha256"' ALG6='"protocol": "ah", "ah": "sha512"' KL4=32 KL6=64 PNUM=51
  else
    ALG4='"esp": "aes128gcm16"' ALG6='"esp": "aes256-sha512"' KL4=20 KL6=96 PNUM=50
  fi
  K4A=$(openssl rand -hex $KL4) K4B=$(openssl rand -hex $KL4)
  K6A=$(openssl rand -hex $KL6) K6B=$(openssl rand -hex $KL6)
  write_gw() {  # write_gw FILE ME4 PEER4 ME6 PEER6 OUT4 IN4 KOUT4 KIN4 OUT6 IN6 KOUT6 KIN6
    cat > "$1" <<JSON
{
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "manual": {
    "host4": { "local_addr": "$2", "remote_addr": "$3", "mode": "transport", $ALG4,
               "out": { "spi": "$6", "key": "$8" }, "in": { "spi": "$7", "key": "$9" } },
    "host6": { "local_addr": "$4", "remote_addr": "$5", "mode": "transport", $ALG6,
               "out": { "spi": "${10}", "key": "${12}" }, "in": { "spi": "${11}", "key": "${13}" } }
  }
}
JSON
  }
  write_gw "$WORK/gw-a.json" 198.51.100.1 198.51.100.2 2001:db8::1 2001:db8::2 0x3001 0x4001 "$K4A" "$K4B" 0x3006 0x4006 "$K6A" "$K6B"
  write_gw "$WORK/gw-b.json" 198.51.100.2 198.51.100.1 2001:db8::2 2001:db8::1 0x4001 0x3001 "$K4B" "$K4A" 0x4006 0x3006 "$K6B" "$K6A"
  check "configuration accepted" "$IPSECGW" check -c "$WORK/gw-a.json"
  "$IPSECGW" check -c "$WORK/gw-a.json" | grep -E "transport|routes" | sed 's/^/     /'

  ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/gw-a.json" --stats-file "$WORK/a.json" > "$WORK/a.log" 2>&1 &
  track_gw $! "$WORK/a.log"
  ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/gw-b.json" --stats-file "$WORK/b.json" > "$WORK/b.log" 2>&1 &
  track_gw $! "$WORK/b.log"
  wait_for "$WORK/a.log" "gateway: up" && wait_for "$WORK/b.log" "gateway: up" && wait_for "$WORK/b.json" active_sas
  check "the peer's address is routed into the TUN device from the SA's own address" \
    ip -n "$NS-ga" route get 198.51.100.2 | grep -q "dev ipsec0 .*src 198.51.100.1"

  ip netns exec "$NS-gb" timeout 60 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/wan.pcap" not arp 2>/dev/null &
  DUMP=$!
  sleep 1
  check "ping gateway A -> gateway B (IPv4)" ip netns exec "$NS-ga" ping -c 3 -i 0.2 -W 2 -q 198.51.100.2
  check "ping gateway B -> gateway A (IPv4)" ip netns exec "$NS-gb" ping -c 3 -i 0.2 -W 2 -q 198.51.100.1
  check "ping gateway A -> gateway B (IPv6)" ip netns exec "$NS-ga" ping -6 -c 3 -i 0.2 -W 2 -q 2001:db8::2
  check "TCP 4 MB A -> B between the gateways' own addresses, SHA-256 matches" \
    tcp_transfer "$NS-ga" 198.51.100.2 "$NS-gb" 4000000
  check "TCP 4 MB B -> A, SHA-256 matches" tcp_transfer "$NS-gb" 198.51.100.1 "$NS-ga" 4000000
  check "TCP 1 MB A -> B over IPv6, SHA-256 matches" tcp_transfer "$NS-ga" 2001:db8::2 "$NS-gb" 1000000
  stop_capture "$DUMP" "$WORK/wan.pcap"

  TOTAL=$(tcpdump -r "$WORK/wan.pcap" 2>/dev/null | wc -l)
  ND=$(tcpdump -r "$WORK/wan.pcap" 'ip6 multicast or (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)' 2>/dev/null | wc -l)
  ESP=$(tcpdump -r "$WORK/wan.pcap" "ip proto $PNUM or ip6 proto $PNUM" 2>/dev/null | wc -l)
  echo "     link capture: $TOTAL packets, $ESP ${PROTO^^}, $ND neighbour discovery/multicast"
  check "the link carried only ${PROTO^^} ($ESP of $TOTAL, $ND ND/MLD)" test "$TOTAL" -gt 1000 -a "$TOTAL" -eq "$((ESP + ND))"
  # scapy reads the capture: ESP from A carries no IP header inside (transport:
  # after the ESP header comes the TCP segment, which only the key would show),
  # and the outer addresses are the gateways' own.
  check "scapy: every ${PROTO^^} packet is between the two gateways' addresses$([ "$PROTO" = ah ] && echo ", and A's verify with A's keys")" \
    ip netns exec "$NS-ga" $PY - "$WORK/wan.pcap" "$PROTO" "$K4A" "$K6A" <<'PYEOF'
import sys
from scapy.all import rdpcap, IP, IPv6
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
ah = sys.argv[2] == "ah"
layer = AH if ah else ESP
sa4 = SecurityAssociation(AH, spi=0x3001, auth_algo="SHA2-256-128", auth_key=bytes.fromhex(sys.argv[3])) if ah else None
sa6 = SecurityAssociation(AH, spi=0x3006, auth_algo="SHA2-512-256", auth_key=bytes.fromhex(sys.argv[4])) if ah else None
n = verified = 0
for p in rdpcap(sys.argv[1]):
    if layer not in p:
        continue
    l3 = p[IP] if IP in p else p[IPv6]
    assert {l3.src, l3.dst} in ({"198.51.100.1", "198.51.100.2"}, {"2001:db8::1", "2001:db8::2"}), l3.summary()
    n += 1
    if ah and l3.src in ("198.51.100.1", "2001:db8::1"):
        (sa4 if IP in p else sa6).decrypt(l3.__class__(bytes(l3)))  # raises on a bad ICV
        verified += 1
assert n > 1000, n
assert not ah or verified > 500, verified
print(f"     {n} packets, {verified} of A's verified by scapy")
PYEOF
  # A replay and a flipped bit, sent to B from A's address.
  sleep 1.2
  R0=$(stat_of "$WORK/b.json" replay) A0=$(stat_of "$WORK/b.json" auth_failed)
  ip netns exec "$NS-ga" $PY - "$WORK/wan.pcap" "$PROTO" <<'PYEOF'
import socket, sys
from scapy.all import rdpcap, IP
from scapy.layers.ipsec import AH, ESP
ah = sys.argv[2] == "ah"
pkt = None
for p in rdpcap(sys.argv[1]):
    if IP in p and p[IP].src == "198.51.100.1" and (AH if ah else ESP) in p:
        pkt = bytes(p[IP]) if ah else bytes(p[ESP])
assert pkt
flipped = bytearray(pkt)
if ah:
    flipped[20 + 8] ^= 0x40   # AH sequence number, bit 30: ahead of the window, only the ICV can catch it
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
else:
    flipped[4] ^= 0x40
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x4500)
for b in (pkt, bytes(flipped)):
    s.sendto(b, ("198.51.100.2", 0))
PYEOF
  sleep 1.5
  check "replayed packet dropped and counted" test "$(stat_of "$WORK/b.json" replay)" -eq $((R0 + 1))
  check "flipped bit dropped as failed authentication" test "$(stat_of "$WORK/b.json" auth_failed)" -eq $((A0 + 1))

  # Another of A's addresses (10.1.0.1) talking to B's: the transport SA is
  # only for 198.51.100.1, so the packet goes no further than the TUN device.
  M0=$(stat_of "$WORK/a.json" policy_mismatch)
  N0=$(stat_of "$WORK/a.json" no_policy)
  ip netns exec "$NS-ga" ping -c 1 -W 1 -I 10.1.0.1 198.51.100.2 >/dev/null 2>&1
  sleep 1.2
  check "a packet from another source address is not sent in the SA (counted)" \
    test $(( $(stat_of "$WORK/a.json" policy_mismatch) + $(stat_of "$WORK/a.json" no_policy) )) -gt $((M0 + N0))
  check "traffic goes on" ip netns exec "$NS-ga" ping -c 2 -i 0.2 -W 2 -q 198.51.100.2

  stop_all
  check "routes removed on exit" test -z "$(ip -n "$NS-ga" route show table 4500 2>/dev/null)"
}

run_l2tp() {
  echo "== transport mode narrowed to udp/1701 (L2TP/IPsec): only that is protected"
  netns_teardown "$NS"
  netns_setup "$NS"
  local ka kb
  ka=$(openssl rand -hex 20) kb=$(openssl rand -hex 20)
  for side in a b; do
    local me=198.51.100.1 peer=198.51.100.2 out=0x5001 in=0x6001 kout=$ka kin=$kb
    [ $side = b ] && { me=198.51.100.2 peer=198.51.100.1 out=0x6001 in=0x5001 kout=$kb kin=$ka; }
    cat > "$WORK/l2tp-$side.json" <<JSON
{ "tun": { "name": "ipsec0", "mtu": 1400 },
  "manual": { "l2tp": { "local_addr": "$me", "remote_addr": "$peer", "mode": "transport", "esp": "aes128gcm16",
                        "local_ts": ["[udp/1701]"], "remote_ts": ["$peer[udp/1701]"],
                        "out": { "spi": "$out", "key": "$kout" }, "in": { "spi": "$in", "key": "$kin" } } } }
JSON
  done
  check "L2TP configuration accepted" "$IPSECGW" check -c "$WORK/l2tp-a.json"
  ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/l2tp-a.json" --stats-file "$WORK/la.json" > "$WORK/la.log" 2>&1 &
  track_gw $! "$WORK/la.log"
  ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/l2tp-b.json" --stats-file "$WORK/lb.json" > "$WORK/lb.log" 2>&1 &
  track_gw $! "$WORK/lb.log"
  wait_for "$WORK/la.log" "gateway: up" && wait_for "$WORK/lb.log" "gateway: up" && wait_for "$WORK/lb.json" active_sas
  ip netns exec "$NS-gb" timeout 30 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/l2tp.pcap" not arp 2>/dev/null &
  local dump=$!
  sleep 1
  # B listens on 1701 and 9999 and echoes what it gets; A sends from port 1701.
  ip netns exec "$NS-gb" timeout 15 $PY -c "
import socket, select
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('198.51.100.2', 1701))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(('198.51.100.2', 9999))
for _ in range(2):
    r, _, _ = select.select([a, b], [], [], 10)
    for s in r:
        d, addr = s.recvfrom(2000); s.sendto(d, addr)
" &
  local echo=$!
  sleep 0.5
  check "UDP 1701 A -> B and back (in ESP)" ip netns exec "$NS-ga" timeout 5 $PY -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('198.51.100.1', 1701)); s.settimeout(3)
s.sendto(b'l2tp-hello', ('198.51.100.2', 1701)); assert s.recvfrom(2000)[0] == b'l2tp-hello'"
  check "UDP 9999 A -> B and back (in the clear)" ip netns exec "$NS-ga" timeout 5 $PY -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('198.51.100.1', 0)); s.settimeout(3)
s.sendto(b'clear-hello', ('198.51.100.2', 9999)); assert s.recvfrom(2000)[0] == b'clear-hello'"
  check "ping A -> B (in the clear)" ip netns exec "$NS-ga" ping -c 2 -i 0.2 -W 2 -q 198.51.100.2
  wait "$echo" 2>/dev/null
  stop_capture "$dump" "$WORK/l2tp.pcap"
  local esp clear1701 clear9999 echo_req
  esp=$(tcpdump -r "$WORK/l2tp.pcap" 'ip proto 50' 2>/dev/null | wc -l)
  clear1701=$(tcpdump -r "$WORK/l2tp.pcap" 'udp port 1701' 2>/dev/null | wc -l)
  clear9999=$(tcpdump -r "$WORK/l2tp.pcap" 'udp port 9999' 2>/dev/null | wc -l)
  echo_req=$(tcpdump -r "$WORK/l2tp.pcap" 'icmp[icmptype] == icmp-echo' 2>/dev/null | wc -l)
  echo "     link capture: $esp ESP, udp/1701 in the clear $clear1701, udp/9999 in the clear $clear9999, echo requests $echo_req"
  check "udp/1701 crossed only in ESP (2 ESP packets, no clear 1701)" test "$esp" -eq 2 -a "$clear1701" -eq 0
  check "other traffic between the hosts stayed clear" test "$clear9999" -eq 2 -a "$echo_req" -eq 2
  stop_all
}

run_nat() {
  echo "== ESP transport in UDP through an nftables masquerade NAT (RFC 3948 3.1.2)"
  netns_teardown "$NS"
  netns_setup "$NS"
  netns_nat_a "$NS"
  local ka kb
  ka=$(openssl rand -hex 20) kb=$(openssl rand -hex 20)
  # A knows its own private address and B's; B knows A by the NAT's address.
  cat > "$WORK/nat-a.json" <<JSON
{ "tun": { "name": "ipsec0", "mtu": 1400 }, "udp_encap": { "port": 4500, "keepalive": 2 },
  "manual": { "host": { "local_addr": "192.168.77.1", "remote_addr": "198.51.100.2", "mode": "transport",
                        "esp": "aes128gcm16", "encap": "udp",
                        "out": { "spi": "0x7001", "key": "$ka" }, "in": { "spi": "0x8001", "key": "$kb" } } } }
JSON
  cat > "$WORK/nat-b.json" <<JSON
{ "tun": { "name": "ipsec0", "mtu": 1400 }, "udp_encap": { "port": 4500, "keepalive": 0 },
  "manual": { "host": { "local_addr": "198.51.100.2", "remote_addr": "198.51.100.254", "mode": "transport",
                        "esp": "aes128gcm16", "encap": "udp",
                        "out": { "spi": "0x8001", "key": "$kb" }, "in": { "spi": "0x7001", "key": "$ka" } } } }
JSON
  ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/nat-a.json" --stats-file "$WORK/na.json" > "$WORK/na.log" 2>&1 &
  track_gw $! "$WORK/na.log"
  ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/nat-b.json" --stats-file "$WORK/nb.json" > "$WORK/nb.log" 2>&1 &
  track_gw $! "$WORK/nb.log"
  wait_for "$WORK/na.log" "gateway: up" && wait_for "$WORK/nb.log" "gateway: up" && wait_for "$WORK/nb.json" active_sas
  ip netns exec "$NS-gb" timeout 60 tcpdump -i "$NS-m1" -U --immediate-mode -w "$WORK/nat.pcap" not arp 2>/dev/null &
  local dump=$!
  sleep 3  # a keepalive from A opens the NAT's mapping
  check "NAT: ping A -> B" ip netns exec "$NS-ga" ping -c 3 -i 0.2 -W 2 -q 198.51.100.2
  check "NAT: ping B -> A (at the NAT's address)" ip netns exec "$NS-gb" ping -c 3 -i 0.2 -W 2 -q 198.51.100.254
  check "NAT: TCP 2 MB A -> B, SHA-256 matches (checksums recomputed on both ends)" \
    tcp_transfer "$NS-ga" 198.51.100.2 "$NS-gb" 2000000
  stop_capture "$dump" "$WORK/nat.pcap"
  local total udp v6
  total=$(tcpdump -r "$WORK/nat.pcap" 2>/dev/null | wc -l)
  udp=$(tcpdump -r "$WORK/nat.pcap" 'udp port 4500' 2>/dev/null | wc -l)
  v6=$(tcpdump -r "$WORK/nat.pcap" 'ip6' 2>/dev/null | wc -l)  # link-local housekeeping (no IPv6 here)
  echo "     capture behind the NAT: $total packets, $udp UDP 4500, $v6 IPv6 link-local"
  # UDP GSO: a frame of the capture may be a train of ESP packets.
  check "NAT: only ESP in UDP 4500 crossed ($udp of $total, $v6 link-local IPv6)" \
    test "$total" -gt 50 -a "$total" -eq "$((udp + v6))"
  stop_all
  ip netns del "$NS-mid" 2>/dev/null || true
}

run_bundle() {
  echo "== AH+ESP bundle in tunnel mode between the networks (RFC 4301 4.5: IP | AH | ESP)"
  netns_teardown "$NS"
  netns_setup "$NS"
  local ea eb aa ab
  ea=$(openssl rand -hex 20) eb=$(openssl rand -hex 20) aa=$(openssl rand -hex 32) ab=$(openssl rand -hex 32)
  for side in a b; do
    local me=198.51.100.1 peer=198.51.100.2 lts=10.1.0.0/24 rts=10.2.0.0/24
    local o=0x7101 i=0x7201 oa=0x7102 ia=0x7202 ko=$ea ki=$eb kao=$aa kai=$ab
    [ $side = b ] && { me=198.51.100.2 peer=198.51.100.1 lts=10.2.0.0/24 rts=10.1.0.0/24
                       o=0x7201 i=0x7101 oa=0x7202 ia=0x7102 ko=$eb ki=$ea kao=$ab kai=$aa; }
    cat > "$WORK/bundle-$side.json" <<JSON
{ "tun": { "name": "ipsec0", "mtu": 1400 },
  "manual": { "lan": { "local_addr": "$me", "remote_addr": "$peer", "local_ts": ["$lts"], "remote_ts": ["$rts"],
                       "mode": "tunnel", "protocol": "ah+esp", "esp": "aes128gcm16", "ah": "sha256",
                       "out": { "spi": "$o", "key": "$ko", "ah_spi": "$oa", "ah_key": "$kao" },
                       "in": { "spi": "$i", "key": "$ki", "ah_spi": "$ia", "ah_key": "$kai" } } } }
JSON
  done
  check "bundle configuration accepted" "$IPSECGW" check -c "$WORK/bundle-a.json"
  ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/bundle-a.json" --stats-file "$WORK/ba.json" > "$WORK/ba.log" 2>&1 &
  track_gw $! "$WORK/ba.log"
  ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/bundle-b.json" --stats-file "$WORK/bb.json" > "$WORK/bb.log" 2>&1 &
  track_gw $! "$WORK/bb.log"
  wait_for "$WORK/ba.log" "gateway: up" && wait_for "$WORK/bb.log" "gateway: up" && wait_for "$WORK/bb.json" active_sas
  ip netns exec "$NS-gb" timeout 30 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/bundle.pcap" not arp 2>/dev/null &
  local dump=$!
  sleep 1
  check "bundle: ping host A -> host B" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2
  check "bundle: TCP 1 MB host B -> host A, SHA-256 matches" tcp_transfer "$NS-hb" 10.1.0.2 "$NS-ha" 1000000
  stop_capture "$dump" "$WORK/bundle.pcap"
  local total ahn v6
  total=$(tcpdump -r "$WORK/bundle.pcap" 2>/dev/null | wc -l)
  ahn=$(tcpdump -r "$WORK/bundle.pcap" 'ip proto 51' 2>/dev/null | wc -l)
  v6=$(tcpdump -r "$WORK/bundle.pcap" 'ip6' 2>/dev/null | wc -l)
  check "bundle: the link carried only AH ($ahn of $total, $v6 link-local IPv6)" test "$total" -gt 200 -a "$total" -eq "$((ahn + v6))"
  check "bundle: scapy verifies each packet's AH, then decrypts the ESP inside to an inner packet" \
    ip netns exec "$NS-ga" $PY - "$WORK/bundle.pcap" "$ea" "$eb" "$aa" "$ab" <<'PYEOF'
import sys
from scapy.all import rdpcap, IP
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
ea, eb, aa, ab = (bytes.fromhex(x) for x in sys.argv[2:6])
ah = {0x7102: aa, 0x7202: ab}
esp = {0x7101: ea, 0x7201: eb}
n = 0
for p in rdpcap(sys.argv[1]):
    if IP not in p or AH not in p:
        continue
    ip = IP(bytes(p[IP]))
    assert ip[AH].nh == 50, ip.summary()
    a = SecurityAssociation(AH, spi=ip[AH].spi, auth_algo="SHA2-256-128", auth_key=ah[ip[AH].spi])
    inner = IP(bytes(a.decrypt(ip)))        # raises on a bad ICV
    spi = inner[ESP].spi
    t = IP(src=ip.src, dst=ip.dst)
    e = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=esp[spi], crypt_icv_size=16, tunnel_header=t)
    q = e.decrypt(inner)
    assert q.src.startswith("10.") and q.dst.startswith("10."), q.summary()
    n += 1
assert n > 200, n
print(f"     {n} bundle packets: AH verified, ESP decrypted to 10.x packets")
PYEOF
  stop_all
}

run_transport esp
run_transport ah
run_l2tp
run_nat
run_bundle
test_finish
