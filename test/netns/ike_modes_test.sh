#!/usr/bin/env bash
# Two ipsecgw gateways negotiating with IKEv2 what goes beyond an ESP
# tunnel: an ESP transport-mode child between the gateways' own addresses
# (USE_TRANSPORT_MODE) beside a tunnel child narrowed to tcp/443 (traffic to
# other ports of the same host is dropped and counted); then AH children,
# transport and tunnel (ah_proposals); then IKEv1 Quick Mode with ESP
# transport and an AH+ESP bundle, and with AH alone (transport, and a GMAC
# tunnel). Every ESP and AH packet captured on
# the link is checked by scapy with the keys from gateway A's key logs:
# ESP decrypts (transport: TCP/ICMP right after ESP; tunnel: an inner IP
# packet to or from port 443), AH verifies. Needs root; bounded; cleans up.
set -uo pipefail
IPSECGW=${1:?usage: ike_modes_test.sh path/to/ipsecgw}
IPSECGW=$(readlink -f "$IPSECGW")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
PY=/usr/bin/python3
require_root
require_tools tcpdump "$PY" openssl

test_init igwm

stat_of() {  # stat_of FILE KEY -> totals.drops.KEY
  $PY -c "import json,sys; print(json.load(open('$1'))['totals']['drops']['$2'])"
}

# write_configs CHILDREN_A CHILDREN_B: two IKEv2 gateways, A initiates.
write_configs() {
  local psk
  psk=$(openssl rand -hex 24)
  for side in a b; do
    local la=198.51.100.1 lb=198.51.100.2 lid=gw-a.example rid=gw-b.example children=$1
    [ $side = b ] && { la=198.51.100.2 lb=198.51.100.1 lid=gw-b.example rid=gw-a.example children=$2; }
    cat > "$WORK/gw-$side.json" <<JSON
{
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "keylog": { "esp": "$WORK/esp-$side.keys", "ah": "$WORK/ah-$side.keys" },
  "connections": {
    "peer": {
      "version": ${VERSION:-2},
      "local_addrs": ["$la"], "remote_addrs": ["$lb"],
      "local": { "auth": "psk", "id": "$lid" }, "remote": { "auth": "psk", "id": "$rid" },
      "proposals": ["${IKE_PROPOSAL:-aes256gcm16-prfsha384-x25519}"],
      "children": { $children }
    }
  },
  "secrets": { "peer": { "ids": ["gw-a.example", "gw-b.example"], "secret": "0x$psk" } }
}
JSON
  done
}

start_pair() {  # start_pair CHILDREN: waits until A has that many Child SAs installed
  rm -f "$WORK"/*.keys
  ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/gw-a.json" --stats-file "$WORK/a.json" > "$WORK/a.log" 2>&1 &
  track_gw $! "$WORK/a.log"
  ip netns exec "$NS-gb" "$IPSECGW" run -c "$WORK/gw-b.json" --stats-file "$WORK/b.json" > "$WORK/b.log" 2>&1 &
  track_gw $! "$WORK/b.log"
  wait_for "$WORK/a.log" "gateway: up" && wait_for "$WORK/b.log" "gateway: up"
  for _ in $(seq 100); do
    [ "$(grep -cE '(Child|IPsec) SA .* installed' "$WORK/a.log")" -ge "$1" ] && break
    sleep 0.1
  done
  grep -h "Child SA .* installed\|IPsec SA .* installed\|transport mode\|tunnel mode" "$WORK/a.log" "$WORK/b.log" |
    sed -E 's/^.*ike(v1)?: /     /'
}

# scapy: every ESP/AH packet in the capture, checked with A's key logs.
verify_capture() {  # verify_capture PCAP MODE(esp|ah)
  ip netns exec "$NS-ga" $PY - "$1" "$2" "$WORK/esp-a.keys" "$WORK/ah-a.keys" <<'PYEOF'
import csv, sys
from scapy.all import rdpcap, IP, TCP, ICMP
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
pcap, mode, esp_keys, ah_keys = sys.argv[1:5]
sas = {}
if mode == "esp":
    for row in csv.reader(open(esp_keys)):
        assert row[4].startswith("AES-GCM"), row[4]
        sas[int(row[3], 16)] = SecurityAssociation(ESP, spi=int(row[3], 16), crypt_algo="AES-GCM",
                                                   crypt_key=bytes.fromhex(row[5][2:]))
else:
    algs = {"HMAC-SHA-256-128": "SHA2-256-128", "HMAC-SHA-512-256": "SHA2-512-256"}
    for row in csv.reader(open(ah_keys)):
        key = bytes.fromhex(row[5][2:])
        if row[4].startswith("AES-GMAC"):
            sas[int(row[3], 16)] = ("gmac", key)  # scapy has no GMAC: checked below with python3-cryptography
        else:
            sas[int(row[3], 16)] = SecurityAssociation(AH, spi=int(row[3], 16), auth_algo=algs[row[4].split()[0]],
                                                       auth_key=key)
counts = {"transport": 0, "tunnel": 0}
for p in rdpcap(pcap):
    if IP not in p or (ESP if mode == "esp" else AH) not in p:
        continue
    ip = IP(bytes(p[IP]))
    spi = ip[ESP].spi if mode == "esp" else ip[AH].spi
    assert spi in sas, f"SPI {spi:#x} is not in A's key log"
    ah_nh = ip[AH].nh if mode == "ah" else None
    if isinstance(sas[spi], tuple):  # AH with AES-GMAC (RFC 4543): IV, then the ICV over the masked packet
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from scapy.layers.ipsec import zero_mutable_fields
        key = sas[spi][1]
        field = bytes(ip[AH].icv)
        masked = zero_mutable_fields(ip.copy(), sending=True)
        masked[AH].icv = field[:8] + bytes(len(field) - 8)
        assert AESGCM(key[:-4]).encrypt(key[-4:] + field[:8], b"", bytes(masked)) == field[8:24], "GMAC ICV"
        inner = IP(bytes(ip[AH].payload)) if ah_nh == 4 else ip
        counts["gmac"] = counts.get("gmac", 0) + 1
    else:
        inner = sas[spi].decrypt(ip)  # raises on a bad ICV
    nh = ah_nh if mode == "ah" else inner.proto
    if nh == 4:  # tunnel: an IP packet inside
        q = inner if mode == "ah" and isinstance(sas[spi], tuple) else IP(bytes(inner[IP].payload))
        if mode == "esp":
            assert TCP in q and 443 in (q[TCP].sport, q[TCP].dport), q.summary()
        counts["tunnel"] += 1
    else:
        assert nh in (1, 6), nh
        assert {ip.src, ip.dst} == {"198.51.100.1", "198.51.100.2"}
        counts["transport"] += 1
print(f"     {counts['transport']} transport and {counts['tunnel']} tunnel {mode.upper()} packets checked by scapy"
      f" ({counts.get('gmac', 0)} AES-GMAC ICVs by python3-cryptography)")
assert counts["transport"] > 200 and counts["tunnel"] > 200, counts
PYEOF
}

echo "== IKEv2: ESP transport between the gateways, and a tunnel child narrowed to tcp/443"
netns_setup "$NS"
write_configs \
  '"hosts": { "mode": "transport", "esp_proposals": ["aes128gcm16"], "start_action": "start" },
   "web": { "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24[tcp/443]"], "esp_proposals": ["aes256gcm16"], "start_action": "start" }' \
  '"hosts": { "mode": "transport", "esp_proposals": ["aes128gcm16"] },
   "web": { "local_ts": ["10.2.0.0/24[tcp/443]"], "remote_ts": ["10.1.0.0/24"], "esp_proposals": ["aes256gcm16"] }'
check "configuration accepted" "$IPSECGW" check -c "$WORK/gw-a.json"
start_pair 2
check "A: the hosts child is an ESP transport-mode SA" grep -q "peer/hosts/.* installed: ESP transport" "$WORK/a.log"
check "B: the hosts child is an ESP transport-mode SA" grep -q "peer/hosts/.* installed: ESP transport" "$WORK/b.log"
check "A: the web child is a tunnel narrowed to tcp/443" grep -qE "peer/web/.* installed: ESP tunnel .*10\.2\.0\.0-10\.2\.0\.255\[6/443\]" "$WORK/a.log"
ip netns exec "$NS-gb" timeout 60 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/esp.pcap" not arp 2>/dev/null &
DUMP=$!
sleep 1
check "transport: ping gateway A -> gateway B" ip netns exec "$NS-ga" ping -c 3 -i 0.2 -W 2 -q 198.51.100.2
check "transport: TCP 1 MB A -> B between the gateways, SHA-256 matches" tcp_transfer "$NS-ga" 198.51.100.2 "$NS-gb" 1000000
check "tunnel: TCP 1 MB host A -> host B port 443, SHA-256 matches" tcp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 1000000 443
sleep 1.2
N0=$(stat_of "$WORK/a.json" no_policy)
check "tunnel: TCP to port 5001 of the same host does not get through" \
  exits_with 1 tcp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 1000 5001
check "tunnel: ping to the same host does not get through" exits_with 1 ip netns exec "$NS-ha" ping -c 2 -i 0.2 -W 1 -q 10.2.0.2
sleep 1.2
N1=$(stat_of "$WORK/a.json" no_policy)
echo "     A dropped $((N1 - N0)) packets outside the narrowed selectors (no_policy)"
check "A counted what the narrowed child does not carry (no_policy +$((N1 - N0)))" test "$N1" -ge $((N0 + 3))
stop_capture "$DUMP" "$WORK/esp.pcap"
TOTAL=$(tcpdump -r "$WORK/esp.pcap" 2>/dev/null | wc -l)
ESP=$(tcpdump -r "$WORK/esp.pcap" 'ip proto 50' 2>/dev/null | wc -l)
IKE=$(tcpdump -r "$WORK/esp.pcap" 'udp port 500 or udp port 4500' 2>/dev/null | wc -l)
V6=$(tcpdump -r "$WORK/esp.pcap" 'ip6' 2>/dev/null | wc -l)
check "the link carried only ESP and IKE ($ESP ESP of $TOTAL, $IKE IKE, $V6 IPv6 link-local)" \
  test "$TOTAL" -eq "$((ESP + IKE + V6))"
check "scapy decrypts every ESP packet with the key log's keys (transport and tunnel)" verify_capture "$WORK/esp.pcap" esp
stop_all

echo "== IKEv2: AH, transport between the gateways and tunnel between the networks"
write_configs \
  '"hosts": { "mode": "transport", "ah_proposals": ["sha256"], "start_action": "start" },
   "lan": { "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"], "ah_proposals": ["aes256gmac"], "start_action": "start" }' \
  '"hosts": { "mode": "transport", "ah_proposals": ["sha256"] },
   "lan": { "local_ts": ["10.2.0.0/24"], "remote_ts": ["10.1.0.0/24"], "ah_proposals": ["sha512", "aes256gmac"] }'
start_pair 2
check "A: the hosts child is an AH transport-mode SA" grep -q "peer/hosts/.* installed: AH transport ah-sha256" "$WORK/a.log"
check "B: the lan child is an AH tunnel with AES-256-GMAC" grep -q "peer/lan/.* installed: AH tunnel ah-aes256gmac" "$WORK/b.log"
ip netns exec "$NS-gb" timeout 60 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/ah.pcap" not arp 2>/dev/null &
DUMP=$!
sleep 1
check "AH transport: TCP 1 MB A -> B, SHA-256 matches" tcp_transfer "$NS-ga" 198.51.100.2 "$NS-gb" 1000000
check "AH tunnel: TCP 1 MB host A -> host B, SHA-256 matches" tcp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 1000000
check "AH tunnel: ping host B -> host A" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2
stop_capture "$DUMP" "$WORK/ah.pcap"
TOTAL=$(tcpdump -r "$WORK/ah.pcap" 2>/dev/null | wc -l)
AHN=$(tcpdump -r "$WORK/ah.pcap" 'ip proto 51' 2>/dev/null | wc -l)
V6=$(tcpdump -r "$WORK/ah.pcap" 'ip6' 2>/dev/null | wc -l)
check "the link carried only AH ($AHN of $TOTAL, $V6 IPv6 link-local)" test "$TOTAL" -eq "$((AHN + V6))"
check "scapy verifies every AH packet with the key log's keys (transport and tunnel)" verify_capture "$WORK/ah.pcap" ah
stop_all

echo "== IKEv1 Quick Mode: ESP transport between the gateways, and an AH+ESP bundle between the networks"
VERSION=1 IKE_PROPOSAL=aes128-sha256-modp2048 write_configs \
  '"hosts": { "mode": "transport", "esp_proposals": ["aes128gcm16"], "start_action": "start" },
   "lan": { "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"], "esp_proposals": ["aes128gcm16"],
            "ah_proposals": ["sha256"], "start_action": "start" }' \
  '"hosts": { "mode": "transport", "esp_proposals": ["aes128gcm16"] },
   "lan": { "local_ts": ["10.2.0.0/24"], "remote_ts": ["10.1.0.0/24"], "esp_proposals": ["aes128gcm16"],
            "ah_proposals": ["sha256"] }'
check "IKEv1 configuration accepted" "$IPSECGW" check -c "$WORK/gw-a.json"
start_pair 2
check "A: the hosts child is an ESP transport-mode IPsec SA" grep -q "IPsec SA peer/hosts/.* installed: transport aes128gcm16" "$WORK/a.log"
check "B: the lan child is an AH+ESP bundle" grep -q "IPsec SA peer/lan/.* installed: tunnel aes128gcm16+ah-sha256" "$WORK/b.log"
ip netns exec "$NS-gb" timeout 60 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/v1.pcap" not arp 2>/dev/null &
DUMP=$!
sleep 1
check "IKEv1 transport: TCP 1 MB A -> B, SHA-256 matches" tcp_transfer "$NS-ga" 198.51.100.2 "$NS-gb" 1000000
check "IKEv1 bundle: TCP 1 MB host A -> host B, SHA-256 matches" tcp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 1000000
check "IKEv1 bundle: ping host B -> host A" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2
stop_capture "$DUMP" "$WORK/v1.pcap"
check "scapy: transport ESP decrypts; each bundle packet's AH verifies and its ESP decrypts (key logs)" \
  ip netns exec "$NS-ga" $PY - "$WORK/v1.pcap" "$WORK/esp-a.keys" "$WORK/ah-a.keys" <<'PYEOF'
import csv, sys
from scapy.all import rdpcap, IP, TCP, ICMP
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
esp = {int(r[3], 16): bytes.fromhex(r[5][2:]) for r in csv.reader(open(sys.argv[2]))}
ah = {int(r[3], 16): bytes.fromhex(r[5][2:]) for r in csv.reader(open(sys.argv[3]))}
tr = bundle = 0
for p in rdpcap(sys.argv[1]):
    if IP not in p:
        continue
    ip = IP(bytes(p[IP]))
    if AH in ip:
        a = SecurityAssociation(AH, spi=ip[AH].spi, auth_algo="SHA2-256-128", auth_key=ah[ip[AH].spi])
        assert ip[AH].nh == 50
        inner = IP(bytes(a.decrypt(ip)))  # raises on a bad ICV
        e = SecurityAssociation(ESP, spi=inner[ESP].spi, crypt_algo="AES-GCM", crypt_key=esp[inner[ESP].spi],
                                crypt_icv_size=16, tunnel_header=IP(src=ip.src, dst=ip.dst))
        q = e.decrypt(inner)
        assert q.src.startswith("10.") and q.dst.startswith("10."), q.summary()
        bundle += 1
    elif ESP in ip:
        e = SecurityAssociation(ESP, spi=ip[ESP].spi, crypt_algo="AES-GCM", crypt_key=esp[ip[ESP].spi],
                                crypt_icv_size=16)
        q = e.decrypt(ip)
        assert q.proto in (1, 6) and {q.src, q.dst} == {"198.51.100.1", "198.51.100.2"}, q.summary()
        tr += 1
print(f"     {tr} transport ESP packets decrypted, {bundle} bundle packets verified (AH) and decrypted (ESP)")
assert tr > 200 and bundle > 200, (tr, bundle)
PYEOF
stop_all

echo "== IKEv1 Quick Mode: AH alone, transport between the gateways and tunnel (AES-GMAC) between the networks"
VERSION=1 IKE_PROPOSAL=aes128-sha256-modp2048 write_configs \
  '"hosts": { "mode": "transport", "ah_proposals": ["sha256"], "start_action": "start" },
   "lan": { "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"], "ah_proposals": ["aes256gmac"], "start_action": "start" }' \
  '"hosts": { "mode": "transport", "ah_proposals": ["sha256"] },
   "lan": { "local_ts": ["10.2.0.0/24"], "remote_ts": ["10.1.0.0/24"], "ah_proposals": ["aes256gmac"] }'
start_pair 2
check "A: IKEv1 AH transport and AH tunnel (GMAC) IPsec SAs" \
  bash -c "grep -q 'IPsec SA peer/hosts/.* installed: transport ah-sha256' '$WORK/a.log' &&
           grep -q 'IPsec SA peer/lan/.* installed: tunnel ah-aes256gmac' '$WORK/a.log'"
ip netns exec "$NS-gb" timeout 60 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/v1ah.pcap" not arp 2>/dev/null &
DUMP=$!
sleep 1
check "IKEv1 AH transport: TCP 1 MB A -> B, SHA-256 matches" tcp_transfer "$NS-ga" 198.51.100.2 "$NS-gb" 1000000
check "IKEv1 AH tunnel: TCP 1 MB host A -> host B, SHA-256 matches" tcp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 1000000
stop_capture "$DUMP" "$WORK/v1ah.pcap"
check "scapy verifies every IKEv1 AH packet with the key log's keys (HMAC by scapy, GMAC by python3-cryptography)" \
  verify_capture "$WORK/v1ah.pcap" ah
stop_all
test_finish
