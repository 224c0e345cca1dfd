#!/usr/bin/env bash
# Two ipsecgw gateways in network namespaces with a host behind each:
# ping and checksummed TCP transfers both ways (IPv4 and IPv6 inside), only
# ESP / UDP 4500 on the link between the gateways, and a replayed packet, a
# flipped bit and an unknown SPI dropped and counted while traffic goes on.
# Runs over UDP 4500 with IPv4 outer and over raw ESP with IPv6 outer with
# two workers and the offloads, and over UDP with one worker and none. Needs root; bounded by timeouts; cleans up after itself.
set -uo pipefail
IPSECGW=${1:?usage: tunnel_test.sh path/to/ipsecgw}
IPSECGW=$(readlink -f "$IPSECGW")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
PY=/usr/bin/python3
require_root
require_tools tcpdump "$PY" nc openssl

test_init igwt

stat_of() {  # stat_of FILE KEY -> totals.drops.KEY
  $PY -c "import json,sys; print(json.load(open('$1'))['totals']['drops']['$2'])"
}
dp_of() {  # dp_of FILE KEY -> dataplane.KEY
  $PY -c "import json,sys; print(int(json.load(open('$1'))['dataplane']['$2']))"
}

run_suite() {  # run_suite ESP ENCAP OUTER WORKERS OFFLOAD
  local esp=$1 encap=$2 outer=$3
  export DP_WORKERS=$4 DP_OFFLOAD=$5
  echo "== $esp, encap $encap, IPv$outer outer, $4 workers, offload $5"
  netns_teardown "$NS"
  netns_setup "$NS"
  write_pair_configs "$WORK" "$esp" "$encap" "$outer" "$(esp_key_len "$esp")"
  ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/gw-a.json" --stats-file "$WORK/a.json" > "$WORK/a.log" 2>&1 &
  track_gw $! "$WORK/a.log"
  ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/gw-b.json" --stats-file "$WORK/b.json" > "$WORK/b.log" 2>&1 &
  track_gw $! "$WORK/b.log"
  wait_for "$WORK/a.log" "gateway: up" && wait_for "$WORK/b.log" "gateway: up" && wait_for "$WORK/b.json" active_sas

  local wan_if="$NS-w1"
  # Everything but ARP; IPv6 neighbour discovery and multicast (MLD) are
  # counted apart below, so a cleartext ICMPv6 echo would still show.
  ip netns exec "$NS-gb" timeout 120 tcpdump -i "$wan_if" -U --immediate-mode -w "$WORK/wan.pcap" \
    not arp 2>/dev/null &
  local dump=$!
  sleep 1

  check "ping A->B IPv4" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2 >/dev/null
  check "ping B->A IPv4" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2 >/dev/null
  check "ping A->B IPv6" ip netns exec "$NS-ha" ping -6 -c 3 -i 0.2 -W 2 -q fd02::2 >/dev/null
  check "ping B->A IPv6" ip netns exec "$NS-hb" ping -6 -c 3 -i 0.2 -W 2 -q fd01::2 >/dev/null
  check "TCP 4 MB A->B, SHA-256 matches" tcp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 4000000
  check "TCP 4 MB B->A, SHA-256 matches" tcp_transfer "$NS-hb" 10.1.0.2 "$NS-ha" 4000000
  check "TCP 1 MB A->B over IPv6, SHA-256 matches" tcp_transfer "$NS-ha" fd02::2 "$NS-hb" 1000000
  # The hand-off share below is of this traffic both ways (one-way UDP has
  # no return traffic to steer it to its SA's worker).
  sleep 1.2  # the statistics file is written every second
  cp "$WORK/a.json" "$WORK/a-twoway.json"; cp "$WORK/b.json" "$WORK/b-twoway.json"
  # UDP in runs of equal datagrams: with USO the receiving gateway writes
  # them to TUN as GSO_UDP_L4 super-packets that the kernel cuts again.
  check "UDP 3000 x 1200 bytes A->B, each datagram intact" udp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 3000 1200
  check "UDP 2000 x 1000 bytes B->A over IPv6, each datagram intact" \
    udp_transfer "$NS-hb" fd01::2 "$NS-ha" 2000 1000
  stop_capture "$dump" "$WORK/wan.pcap"

  # The offloads were used (or, switched off, not): TSO super-packets cut
  # on the sending side, segments coalesced on the receiving one, and over
  # UDP trains sent and received whole.
  sleep 1.2  # the statistics file is written every second
  local w
  for w in a b; do
    check "gateway $w: $4 workers" test "$(dp_of "$WORK/$w.json" workers)" -eq "$4"
    if [ "$4" -gt 1 ]; then
      # An outbound SA is sealed by the worker that decrypts its inbound
      # half, and the TUN device queues a flow for the queue that wrote its
      # return traffic: TCP both ways is (nearly) never handed over.
      local share
      share=$($PY -c "
import json, sys
s = json.load(open(sys.argv[1]))
t = s['totals']
print(int(1000 * s['dataplane']['handoffs'] / max(1, t['packets_out'] + t['packets_in'])))" "$WORK/$w-twoway.json")
      check "gateway $w: under 5% of packets handed to another worker ($share per mille)" test "$share" -lt 50
    fi
    if [ "$5" = true ]; then
      check "gateway $w: TSO super-packets cut ($(dp_of "$WORK/$w.json" tun_super_packets))" \
        test "$(dp_of "$WORK/$w.json" tun_super_packets)" -gt 0
      check "gateway $w: segments coalesced for TUN ($(dp_of "$WORK/$w.json" tun_coalesced))" \
        test "$(dp_of "$WORK/$w.json" tun_coalesced)" -gt 0
      # USO: kernel 6.2 and later.
      if [ "$(printf '6.2\n%s\n' "$(uname -r | cut -d- -f1)" | sort -V | head -1)" = 6.2 ]; then
        check "gateway $w: USO on the TUN device (kernel $(uname -r))" test "$(dp_of "$WORK/$w.json" tun_uso)" -eq 1
      fi
      if [ "$(dp_of "$WORK/$w.json" tun_uso)" -eq 1 ]; then
        check "gateway $w: UDP datagrams coalesced for TUN ($(dp_of "$WORK/$w.json" tun_coalesced_udp))" \
          test "$(dp_of "$WORK/$w.json" tun_coalesced_udp)" -gt 0
      fi
      check "gateway $w: the kernel took every super-packet written to TUN" \
        test "$(dp_of "$WORK/$w.json" tun_coalesce_refused)" -eq 0 -a \
        "$($PY -c "import json; print(json.load(open('$WORK/$w.json'))['tun_write_failed'])")" -eq 0
      if [ "$encap" = udp ]; then
        check "gateway $w: UDP GSO trains sent ($(dp_of "$WORK/$w.json" udp_gso_trains))" \
          test "$(dp_of "$WORK/$w.json" udp_gso_trains)" -gt 0
      fi
    else
      check "gateway $w: no offload used" test "$(dp_of "$WORK/$w.json" tun_super_packets)" -eq 0 -a \
        "$(dp_of "$WORK/$w.json" udp_gso_trains)" -eq 0 -a "$(dp_of "$WORK/$w.json" tun_offload)" -eq 0
    fi
  done

  local total esp_count clear nd
  total=$(tcpdump -r "$WORK/wan.pcap" 2>/dev/null | wc -l)
  # ICMPv6 router/neighbour solicitations and advertisements (types 133-137)
  # and anything sent to a multicast group (MLD): link housekeeping.
  nd=$(tcpdump -r "$WORK/wan.pcap" 'ip6 multicast or (icmp6 and ip6[40] >= 133 and ip6[40] <= 137)' 2>/dev/null | wc -l)
  if [ "$encap" = udp ]; then
    esp_count=$(tcpdump -r "$WORK/wan.pcap" 'udp port 4500' 2>/dev/null | wc -l)
  else
    esp_count=$(tcpdump -r "$WORK/wan.pcap" 'ip proto 50 or ip6 proto 50' 2>/dev/null | wc -l)
  fi
  echo "     link capture: $total packets, $esp_count ESP, $nd neighbour discovery/multicast"
  # With UDP GSO the capture shows trains of ESP packets (one frame each, up
  # to 64 KiB), so 9 MB take a few hundred frames rather than thousands.
  check "link between gateways carried only ESP ($esp_count of $total, $nd ND/MLD)" \
    test "$total" -gt 200 -a "$total" -eq "$((esp_count + nd))"
  clear=$(tcpdump -r "$WORK/wan.pcap" 'host 10.1.0.2 or host 10.2.0.2 or host fd01::2 or host fd02::2 or icmp6[0] == 128 or icmp6[0] == 129' 2>/dev/null | wc -l)
  check "no inner address and no ICMPv6 echo visible on the link" test "$clear" -eq 0

  # Replay, flip and unknown SPI: take a captured packet from A to B.
  local before_replay before_auth before_spi before_big
  sleep 1.2
  before_replay=$(stat_of "$WORK/b.json" replay)
  before_auth=$(stat_of "$WORK/b.json" auth_failed)
  before_spi=$(stat_of "$WORK/b.json" bad_spi)
  before_big=$(dp_of "$WORK/b.json" socket_rx_discarded)
  ip netns exec "$NS-ga" $PY - "$WORK/wan.pcap" "$encap" "$outer" <<'PYEOF'
import socket, sys
from scapy.all import rdpcap, IP, IPv6, UDP
from scapy.layers.ipsec import ESP
pcap, encap, outer = sys.argv[1], sys.argv[2], sys.argv[3]
src = "198.51.100.1" if outer == "4" else "2001:db8::1"
dst = "198.51.100.2" if outer == "4" else "2001:db8::2"
L3 = IP if outer == "4" else IPv6
esp = None
for p in rdpcap(pcap):
    if L3 not in p or p[L3].src != src:
        continue
    # Larger than the link MTU: a train of ESP packets sent with UDP GSO
    # (captured before the device cuts it), not one packet.
    if encap == "udp" and UDP in p and 8 < len(bytes(p[UDP].payload)) <= 1500:
        esp = bytes(p[UDP].payload)
    elif encap != "udp" and ESP in p:
        esp = bytes(p[ESP])
assert esp, "no ESP packet from A captured"
# Flip bit 30 of the sequence number: the packet is then ahead of the replay
# window, so only the ICV can catch it (an old one is caught as a replay first).
flipped = bytearray(esp); flipped[4] ^= 0x40
unknown = b"\xde\xad\xbe\xef" + esp[4:]
# Larger than any packet buffer (IP fragments, reassembled by B's kernel).
big = esp[:8] + bytes(12000)
fam = socket.AF_INET if outer == "4" else socket.AF_INET6
if encap == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x4500)
    for pkt in (esp, bytes(flipped), unknown, big):
        s.sendto(pkt, (dst, 4500))
else:
    s = socket.socket(fam, socket.SOCK_RAW, 50)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x4500)
    for pkt in (esp, bytes(flipped), unknown, big):
        s.sendto(pkt, (dst, 0))
print("     sent a replayed, a flipped, an unknown-SPI and a 12000-byte packet to B")
PYEOF
  sleep 1.5
  check "replayed packet dropped and counted" test "$(stat_of "$WORK/b.json" replay)" -eq $((before_replay + 1))
  check "flipped bit dropped as failed authentication" test "$(stat_of "$WORK/b.json" auth_failed)" -eq $((before_auth + 1))
  check "unknown SPI dropped and counted" test "$(stat_of "$WORK/b.json" bad_spi)" -eq $((before_spi + 1))
  check "a datagram larger than a packet buffer discarded and counted" \
    test "$(dp_of "$WORK/b.json" socket_rx_discarded)" -ge $((before_big + 1))
  check "traffic goes on after the bad packets" ip netns exec "$NS-ha" ping -c 2 -i 0.2 -W 2 -q 10.2.0.2 >/dev/null
  check "drops were logged" grep -q "replayed or too old" "$WORK/b.log"

  stop_all
  check "routes and rules removed on exit" \
    test -z "$(ip -n "$NS-ga" rule | grep 4500)" -a -z "$(ip -n "$NS-ga" link show ipsec0 2>/dev/null)"
}

# Two workers (SPIs steered across them) with the TUN and UDP offloads, raw
# ESP with them, and one worker without any offload.
run_suite aes256gcm16 udp 4 2 true
run_suite aes128-sha256 none 6 2 true
run_suite aes128gcm16 udp 4 1 false
test_finish
