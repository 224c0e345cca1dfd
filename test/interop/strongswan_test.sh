#!/usr/bin/env bash
# IKEv2 interop with strongSwan 5.9.8 (charon + kernel-libipsec, swanctl), in
# network namespaces: ipsecgw on gateway A, charon on gateway B, a host behind
# each. Both directions of initiation, three proposal suites, ping and a
# checksummed TCP transfer, Child SA rekeying under traffic, DELETE, NAT,
# transport-mode and AH proposals ipsecgw answers in a way strongSwan can
# live with, and a wrong PSK. Needs root; bounded; cleans up after itself.
set -uo pipefail
IPSECGW=${1:?usage: strongswan_test.sh path/to/ipsecgw}
IPSECGW=$(readlink -f "$IPSECGW")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
PY=/usr/bin/python3
CHARON=/usr/lib/ipsec/charon
require_root
require_tools "$CHARON" swanctl tshark tcpdump nft conntrack "$PY" nc

test_init igws

source "$HERE/strongswan-lib.sh"

# write_swanctl IKE_PROPOSAL ESP_PROPOSAL START_ACTION PSK [child rekey_time] [IKE rekey_time] [child life_time]
# SW_LOCAL and SW_REMOTE override local_addrs and remote_addrs (e.g. %any
# behind a NAT), SW_DPD dpd_delay.
write_swanctl() {
  cat > "$WORK/swanctl.conf" <<CONF
connections {
  gw-a {
    version = 2
    local_addrs = ${SW_LOCAL:-198.51.100.2}
    remote_addrs = ${SW_REMOTE:-198.51.100.1}
    proposals = $1
    rekey_time = ${6:-4h}
    dpd_delay = ${SW_DPD:-0s}
    over_time = 20s
    rand_time = 0s
    local { auth = psk
            id = gw-b.example }
    remote { auth = psk
             id = gw-a.example }
    children {
      lan {
        local_ts = 10.2.0.0/24
        remote_ts = 10.1.0.0/24
        esp_proposals = $2
        start_action = $3
        rekey_time = ${5:-3600}
        life_time = ${7:-7200}
        rand_time = 0
      }
    }
  }
}
secrets {
  ike-a {
    id-a = gw-a.example
    id-b = gw-b.example
    secret = "$4"
  }
}
CONF
  swan --load-all --file "$WORK/swanctl.conf" > "$WORK/swanctl-load.log" 2>&1
}

# write_ipsecgw IKE_PROPOSAL ESP_PROPOSAL START_ACTION PSK
# GW_LOCAL, GW_REKEY, GW_DPD_DELAY, GW_DPD_TIMEOUT override defaults.
write_ipsecgw() {
  local keylog_json=""
  [ -n "${GW_KEYLOG:-}" ] && keylog_json="\"keylog\": { \"esp\": \"$WORK/keys/esp_sa\", \"ikev2\": \"$WORK/keys/ikev2_decryption_table\" },"
  cat > "$WORK/gw-a.json" <<JSON
{
  "tun": { "name": "ipsec0", "mtu": 1400 },
  $keylog_json
  "connections": {
    "site-b": {
      "version": 2,
      "local_addrs": ["${GW_LOCAL:-198.51.100.1}"],
      "remote_addrs": ["${GW_REMOTE:-198.51.100.2}"],
      "local":  { "auth": "psk", "id": "gw-a.example" },
      "remote": { "auth": "psk", "id": "gw-b.example" },
      "proposals": ["$1"],
      "dpd_delay": ${GW_DPD_DELAY:-5},
      "dpd_timeout": ${GW_DPD_TIMEOUT:-0},
      "rekey_time": ${GW_REKEY:-14400},
      "fragment_size": ${GW_FRAG:-1228},
      "children": {
        "lan": {
          "local_ts": ["10.1.0.0/24"],
          "remote_ts": ["10.2.0.0/24"],
          "esp_proposals": ["$2"],
          "start_action": "$3"
        }
      }
    }
  },
  "secrets": {
    "site-b": { "type": "psk", "ids": ["gw-a.example", "gw-b.example"], "secret": "$4" }
  }
}
JSON
}

# run_case NAME INITIATOR(ipsecgw|strongswan) IKE ESP
run_case() {
  local name=$1 who=$2 ike=$3 esp=$4
  echo "== $name: $who initiates, $ike / $esp"
  stop_all
  netns_teardown "$NS"; netns_setup "$NS"
  start_charon || { FAIL=$((FAIL + 1)); return; }
  local sw_start=none gw_start=none
  if [ "$who" = ipsecgw ]; then gw_start=start; else sw_start=none; fi
  write_swanctl "$ike" "$esp" "$sw_start" "a long shared secret"
  write_ipsecgw "$ike" "$esp" "$gw_start" "a long shared secret"
  if [ -n "${CAPTURE:-}" ]; then
    ip netns exec "$NS-gb" timeout 60 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/interop.pcap" \
      udp 2>/dev/null &
    DUMP=$!
    sleep 0.5
  fi
  start_ipsecgw
  if [ "$who" = strongswan ]; then
    timeout 20 swanctl --initiate --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > "$WORK/init.log" 2>&1
  fi
  check "$name: IKE SA and Child SA up on both sides" wait_installed
  check "$name: strongSwan lists the SA as ESTABLISHED, INSTALLED, TUNNEL-in-UDP" \
    bash -c "$(declare -f swan list_sas); WORK='$WORK'; list_sas && grep -q ESTABLISHED '$WORK/sas.txt' && grep -q 'INSTALLED, TUNNEL-in-UDP' '$WORK/sas.txt'"
  check "$name: ping A->B" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2
  check "$name: ping B->A" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2
  check "$name: TCP 2 MB A->B, SHA-256 matches" tcp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 2000000
  check "$name: TCP 2 MB B->A, SHA-256 matches" tcp_transfer "$NS-hb" 10.1.0.2 "$NS-ha" 2000000
  if [ -n "${CAPTURE:-}" ]; then stop_capture "$DUMP" "$WORK/interop.pcap"; fi
}

# 1-3: three suites, both directions of initiation.
mkdir -p "$WORK/keys"
GW_KEYLOG=1 CAPTURE=1 run_case "GCM+X25519" ipsecgw "aes256gcm16-prfsha384-x25519" "aes256gcm16"
# The Wireshark key log opens the capture: IKEv2 and ESP decrypted by tshark.
check "keylog: files written with mode 0600" \
  test "$(stat -c %a "$WORK/keys/esp_sa")" = 600 -a "$(stat -c %a "$WORK/keys/ikev2_decryption_table")" = 600
mkdir -p "$WORK/wsconf/wireshark"
cp "$WORK/keys/esp_sa" "$WORK/keys/ikev2_decryption_table" "$WORK/wsconf/wireshark/"
tshark_dec() { XDG_CONFIG_HOME="$WORK/wsconf" HOME="$WORK/wsconf" tshark -n -r "$WORK/interop.pcap" \
  -o esp.enable_encryption_decode:TRUE "$@" 2>/dev/null; }
check "keylog: tshark decrypts IKE_AUTH (identities and AUTH visible)" \
  bash -c "$(declare -f tshark_dec); WORK='$WORK'; tshark_dec -V -Y 'isakmp.exchangetype == 35' | grep -q 'Payload: Identification - Initiator' && tshark_dec -V -Y 'isakmp.exchangetype == 35' | grep -q 'Payload: Authentication'"
check "keylog: tshark decrypts ESP in UDP (the inner ICMP and TCP between the hosts)" \
  bash -c "$(declare -f tshark_dec); WORK='$WORK'; tshark_dec -Y 'icmp && ip.src == 10.1.0.2' | grep -q 'Echo (ping) request' && tshark_dec -Y 'tcp.port == 5001' | grep -q 10.2.0.2"
# The same capture, ESP decryption on but no keys: tshark reads the ESP
# packets yet cannot see inside them.
mkdir -p "$WORK/nokeys/wireshark"
tshark_nokeys() { XDG_CONFIG_HOME="$WORK/nokeys" HOME="$WORK/nokeys" tshark -n -r "$WORK/interop.pcap" \
  -o esp.enable_encryption_decode:TRUE "$@"; }
check "keylog: without the key log tshark sees the ESP packets but no ICMP inside" \
  bash -c "$(declare -f tshark_nokeys); WORK='$WORK'; n=\$(tshark_nokeys -Y esp | wc -l) && [ \$n -gt 5 ] &&
           tshark_nokeys -Y icmp > '$WORK/nokeys.txt' && ! grep -q Echo '$WORK/nokeys.txt'"
run_case "CBC+SHA256+MODP2048" strongswan "aes128-sha256-modp2048" "aes128-sha256"
SW_LOCAL=2001:db8::2 SW_REMOTE=2001:db8::1 GW_LOCAL=2001:db8::1 GW_REMOTE=2001:db8::2 \
  run_case "GCM+X25519 over IPv6" ipsecgw "aes128gcm16-prfsha256-x25519" "aes128gcm16"
check "IPv6: IKE ran between the IPv6 addresses" grep -q "IKE SA established with 'gw-b.example' at \[2001:db8::2\]" "$WORK/a.log"
run_case "ChaCha20+ECP256" ipsecgw "chacha20poly1305-prfsha256-ecp256" "chacha20poly1305"

# DELETE from ipsecgw (SIGTERM) reaches strongSwan, which clears its SAs.
stop_gw "$IGW"
sleep 0.5; cp "$WORK/charon.log" "$WORK/charon-delete.log"; cp "$WORK/a.log" "$WORK/a-delete.log"
check "ipsecgw's DELETE on shutdown is logged by strongSwan" grep -q "received DELETE for IKE_SA" "$WORK/charon.log"
check "strongSwan has no SA left" test "$(sas_count ESTABLISHED)" = 0
check "ipsecgw removed its routes and TUN device" \
  test -z "$(ip -n "$NS-ga" rule | grep 4500)" -a -z "$(ip -n "$NS-ga" link show ipsec0 2>/dev/null)"
stop_all

# Child SA rekeyed by strongSwan under traffic (our CREATE_CHILD_SA responder),
# and DELETE from strongSwan.
echo "== rekey: strongSwan rekeys the Child SA every 6 s and the IKE SA every 8 s, under ping; both fragment above 200 bytes"
netns_teardown "$NS"; netns_setup "$NS"
CHARON_FRAG=200 start_charon
# Child life_time 10 s: a rekey that failed would show as an expiry within the 15 s of pings.
write_swanctl "aes128gcm16-prfsha256-x25519" "aes128gcm16-x25519" none "a long shared secret" 6 8 10
GW_FRAG=200 GW_REKEY=0 write_ipsecgw "aes128gcm16-prfsha256-x25519" "aes128gcm16-x25519" none "a long shared secret"
start_ipsecgw
timeout 20 swanctl --initiate --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
check "rekey: IKE SA and Child SA up" wait_installed
ip netns exec "$NS-ha" ping -c 75 -i 0.2 -W 1 10.2.0.2 > "$WORK/ping.log" 2>&1
cp "$WORK/a.log" "$WORK/a-rekey.log"; cp "$WORK/charon.log" "$WORK/charon-rekey.log"
installed=$(grep -c "Child SA .* installed" "$WORK/a.log")
echo "     ipsecgw installed $installed Child SAs; $(grep -o '[0-9]* received' "$WORK/ping.log") of 75 pings"
check "rekey: ipsecgw installed the rekeyed Child SAs ($installed)" test "$installed" -ge 3
check "rekey: with PFS (a KE in each rekey)" test "$(grep -c 'Child SA .* installed: .*, PFS' "$WORK/a.log")" -ge 2
check "rekey: strongSwan rekeyed the Child SA at least twice" \
  test "$(grep -c 'generating CREATE_CHILD_SA request.*N(REKEY_SA)' "$WORK/charon.log")" -ge 2
check "rekey: no Child SA reached its 10 s hard lifetime (each was rekeyed in time)" \
  no_match 'closing expired CHILD_SA|CHILD_SA .* expired' "$WORK/charon.log"
check "rekey: no ping lost across rekeys" grep -q " 0% packet loss" "$WORK/ping.log"
check "rekey: old Child SAs deleted by the peer" grep -q "peer deleted Child SA" "$WORK/a.log"
check "rekey: strongSwan rekeyed the IKE SA" grep -q "IKE SA rekeyed by the peer" "$WORK/a.log"
check "rekey: ipsecgw reassembled strongSwan's fragmented messages (RFC 7383)" grep -qE "reassembled [0-9]+ fragments" "$WORK/a.log"
check "rekey: no reassembly refused" no_match "reassembled message too large" "$WORK/a.log"
check "rekey: strongSwan reassembled ipsecgw's fragments" grep -q "received fragment #" "$WORK/charon.log"
check "rekey: strongSwan saw no errors" no_match 'INVALID_SYNTAX|INVALID_IKE_SPI|INVALID_MESSAGE_ID|verification failed' "$WORK/charon.log"
check "rekey: one IKE SA and one Child SA in the end" \
  bash -c "$(declare -f swan list_sas); WORK='$WORK'; list_sas && [ \$(grep -c ESTABLISHED '$WORK/sas.txt') -eq 1 ] && [ \$(grep -c INSTALLED '$WORK/sas.txt') -eq 1 ]"
timeout 10 swanctl --terminate --ike gw-a --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
sleep 0.5
check "DELETE from strongSwan clears ipsecgw's SAs" grep -q "peer deleted the IKE SA" "$WORK/a.log"
check "no Child SA left in ipsecgw" bash -c "sleep 1.2; $PY -c \"import json,sys; sys.exit(json.load(open('$WORK/a.json'))['active_sas'])\""
stop_all

# trap: the first packet to the remote network brings the tunnel up; the
# packets held meanwhile are sent once the Child SA is installed.
echo "== trap: ipsecgw sets up the SA when the first packet arrives"
netns_teardown "$NS"; netns_setup "$NS"
start_charon
write_swanctl "aes256gcm16-prfsha384-x25519" "aes256gcm16" none "a long shared secret"
write_ipsecgw "aes256gcm16-prfsha384-x25519" "aes256gcm16" trap "a long shared secret"
start_ipsecgw
sleep 1
check "trap: nothing is set up before traffic" no_match 'IKE_SA_INIT' "$WORK/a.log"
ip netns exec "$NS-ha" ping -c 1 -W 5 10.2.0.2 > "$WORK/ping-trap.log" 2>&1
check "trap: the very first ping is answered (held, then sent)" grep -q " 0% packet loss" "$WORK/ping-trap.log"
check "trap: acquire logged" grep -q "acquire for a packet matching the trap policy" "$WORK/a.log"
check "trap: ping A->B afterwards" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2
check "trap: exactly one IKE SA" test "$(grep -c 'initiating IKE_SA_INIT' "$WORK/a.log")" -eq 1
stop_all

# DPD: charon killed, ipsecgw notices within dpd_delay + dpd_timeout.
echo "== DPD: strongSwan killed"
netns_teardown "$NS"; netns_setup "$NS"
start_charon
CHARON_PID=${PIDS[-1]}
write_swanctl "aes256gcm16-prfsha384-x25519" "aes256gcm16" none "a long shared secret"
GW_DPD_DELAY=2 GW_DPD_TIMEOUT=4 write_ipsecgw "aes256gcm16-prfsha384-x25519" "aes256gcm16" start "a long shared secret"
start_ipsecgw
check "DPD: the tunnel is up before strongSwan is killed" wait_installed
check "DPD: and answers liveness checks meanwhile" bash -c "sleep 3; grep -q 'IKE SA established' '$WORK/a.log' && ! grep -q 'peer considered dead' '$WORK/a.log'"
kill -KILL "$CHARON_PID"
t0=$(date +%s%N)
dead_after=-1
for _ in $(seq 150); do
  if grep -q "peer considered dead" "$WORK/a.log"; then dead_after=$((($(date +%s%N) - t0) / 1000000)); break; fi
  sleep 0.1
done
echo "     found dead after ${dead_after} ms (dpd_delay 2 s + dpd_timeout 4 s)"
check "DPD: found dead by the liveness check's dpd_timeout, not by running out of retransmissions" \
  grep -q "no answer to the liveness check within dpd_timeout 4 s; peer considered dead" "$WORK/a.log"
# dpd_delay + dpd_timeout = 6 s at most after the last message heard; 1 s for scheduling.
check "DPD: within dpd_delay + dpd_timeout (6 s, +1 s slack): ${dead_after} ms" \
  test "$dead_after" -ge 0 -a "$dead_after" -le 7000
check "DPD: its Child SA is removed" bash -c "sleep 1.2; $PY -c \"import json,sys; sys.exit(json.load(open('$WORK/a.json'))['active_sas'])\""
stop_all

# NAT: ipsecgw behind an nftables masquerade, initiating to strongSwan.
echo "== NAT: ipsecgw behind nftables masquerade"
netns_teardown "$NS"; netns_setup "$NS"
netns_nat_a "$NS"
start_charon
SW_REMOTE=%any write_swanctl "aes256gcm16-prfsha384-x25519" "aes256gcm16" none "a long shared secret"
GW_REKEY=3 GW_LOCAL=192.168.77.1 write_ipsecgw "aes256gcm16-prfsha384-x25519" "aes256gcm16" start "a long shared secret"
start_ipsecgw
check "NAT: IKE SA and Child SA up through the NAT" wait_installed
check "NAT: ipsecgw detected the NAT in front of it" grep -q "NAT detected (local" "$WORK/a.log"
check "NAT: strongSwan saw the peer at the NAT's address" \
  bash -c "$(declare -f swan list_sas); WORK='$WORK'; list_sas && grep -q '198.51.100.254' '$WORK/sas.txt'"
check "NAT: ping A->B" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2
check "NAT: ping B->A" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2
check "NAT: TCP 2 MB B->A, SHA-256 matches" tcp_transfer "$NS-hb" 10.1.0.2 "$NS-ha" 2000000
ip netns exec "$NS-ha" ping -c 25 -i 0.2 -W 1 10.2.0.2 > "$WORK/ping.log" 2>&1
check "NAT: ipsecgw rekeyed the IKE SA (every 3 s)" grep -q "IKE SA rekeyed, now" "$WORK/a.log"
check "NAT: no ping lost across IKE rekeys" grep -q " 0% packet loss" "$WORK/ping.log"
check "NAT: strongSwan has exactly one IKE SA" test "$(sas_count ESTABLISHED)" = 1
stop_all

# NAT rebinding: strongSwan behind a NAT initiates to ipsecgw; then the NAT
# maps it anew (another public address, its old mappings flushed), as a home
# router does after a reboot. ipsecgw must follow the peer (RFC 7296 2.23:
# it is behind a NAT, ipsecgw is not), with its IKE SA and its installed
# Child SA: until strongSwan's next IKE message (its DPD, since our answers
# no longer reach it) ipsecgw's ESP goes to the dead mapping; after it,
# traffic flows both ways again on the same Child SA.
echo "== NAT rebinding: strongSwan behind a NAT that changes its mapping"
netns_teardown "$NS"; netns_setup "$NS"
ip netns add "$NS-mid"
ip -n "$NS-ga" link del "$NS-w0"
ip link add "$NS-n0" netns "$NS-ga" type veth peer name "$NS-n1" netns "$NS-mid"
ip link add "$NS-m0" netns "$NS-mid" type veth peer name "$NS-m1" netns "$NS-gb"
ip -n "$NS-ga" addr add 198.51.100.1/24 dev "$NS-n0"
ip -n "$NS-mid" addr add 198.51.100.254/24 dev "$NS-n1"
ip -n "$NS-mid" addr add 198.51.100.253/24 dev "$NS-n1"
ip -n "$NS-mid" addr add 192.168.78.254/24 dev "$NS-m0"
ip -n "$NS-gb" addr add 192.168.78.2/24 dev "$NS-m1"
for l in "ga n0" "mid n1" "mid m0" "gb m1"; do set -- $l; ip -n "$NS-$1" link set "$NS-$2" up; done
ip -n "$NS-mid" link set lo up
ip -n "$NS-gb" route add default via 192.168.78.254
ip netns exec "$NS-mid" sysctl -qw net.ipv4.ip_forward=1
nat_rule() {  # nat_rule ACTION: the NAT's one rule, replaced
  ip netns exec "$NS-mid" nft -f - <<NFT
table ip nat
delete table ip nat
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "$NS-n1" $1
  }
}
NFT
}
nat_rule "snat to 198.51.100.254"
start_charon
SW_LOCAL=192.168.78.2 SW_DPD=2s write_swanctl "aes256gcm16-prfsha384-x25519" "aes256gcm16" none "a long shared secret"
GW_REMOTE=%any GW_DPD_DELAY=0 write_ipsecgw "aes256gcm16-prfsha384-x25519" "aes256gcm16" none "a long shared secret"
start_ipsecgw
timeout 20 swanctl --initiate --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
check "NAT rebinding: IKE SA and Child SA up through the NAT" wait_installed
check "NAT rebinding: ipsecgw sees the peer at the NAT's first address" \
  grep -qE "IKE SA .*198\.51\.100\.254:4500|198\.51\.100\.254 \(UDP-encapsulated\)" "$WORK/a.log"
check "NAT rebinding: ping B->A before" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2
nat_rule "snat to 198.51.100.253"
ip netns exec "$NS-mid" conntrack -D -p udp > /dev/null 2>&1
check "NAT rebinding: the NAT forgot the old mapping" \
  bash -c "! ip netns exec '$NS-mid' conntrack -L -p udp 2>/dev/null | grep -q 198.51.100.254"
# B -> A: the request reaches A from the new address at once; the reply goes
# to the old one until strongSwan's DPD (2 s without an answer) arrives.
ip netns exec "$NS-hb" ping -c 40 -i 0.2 -W 1 10.1.0.2 > "$WORK/ping-move.log" 2>&1
check "NAT rebinding: ipsecgw followed the peer to the new address" \
  grep -q "peer moved from 198.51.100.254:4500 to 198.51.100.253:4500" "$WORK/a.log"
check "NAT rebinding: the installed Child SA followed (same SA, new path)" \
  grep -qE "SA site-b/lan/[0-9a-f]+ now sends to 198\.51\.100\.253 port 4500" "$WORK/a.log"
answered=$(sed -nE "s/.* ([0-9]+) received.*/\1/p" "$WORK/ping-move.log")
echo "     pings answered across the move: ${answered:-?} of 40"
check "NAT rebinding: traffic back within 5 s of the move (at least 15 of 40 pings, 0.2 s apart)" test "${answered:-0}" -ge 15
check "NAT rebinding: ping B->A after the move, none lost" ip netns exec "$NS-hb" ping -c 10 -i 0.2 -W 2 -q 10.1.0.2
check "NAT rebinding: ping A->B after the move, none lost" ip netns exec "$NS-ha" ping -c 10 -i 0.2 -W 2 -q 10.2.0.2
check "NAT rebinding: still one IKE SA and one Child SA in strongSwan (nothing rebuilt)" \
  bash -c "$(declare -f swan list_sas sas_count); WORK='$WORK'; [ \$(sas_count ESTABLISHED) = 1 ] && [ \$(sas_count INSTALLED) = 1 ]"
check "NAT rebinding: no second Child SA in ipsecgw" test "$(grep -c 'Child SA .* installed' "$WORK/a.log")" = 1
stop_all

# Transport mode and AH: strongSwan's kernel-libipsec does neither, so
# ipsecgw must answer its proposals in a way it can live with. strongSwan
# asks for a transport-mode child between the two gateways: ipsecgw's child
# for those hosts is a tunnel, so it answers without USE_TRANSPORT_MODE
# (RFC 7296 1.3.1: tunnel mode) and says so. strongSwan asks for an AH
# child: ipsecgw's child is ESP, so NO_PROPOSAL_CHOSEN, logged. Through all
# of it the IKE SA stays up and carries the ESP tunnel and new exchanges.
# (ipsecgw's own transport mode and AH are shown between two ipsecgw
# gateways: test/netns/ike_modes_test.sh.)
echo "== transport mode and AH proposals from strongSwan"
stop_all
netns_teardown "$NS"; netns_setup "$NS"
start_charon
cat > "$WORK/swanctl.conf" <<CONF
connections {
  gw-a {
    version = 2
    local_addrs = 198.51.100.2
    remote_addrs = 198.51.100.1
    proposals = aes256gcm16-prfsha384-x25519
    rand_time = 0s
    local { auth = psk
            id = gw-b.example }
    remote { auth = psk
             id = gw-a.example }
    children {
      lan {
        local_ts = 10.2.0.0/24
        remote_ts = 10.1.0.0/24
        esp_proposals = aes256gcm16
      }
      tr {
        mode = transport
        esp_proposals = aes128gcm16
      }
      ah {
        local_ts = 10.2.0.0/24
        remote_ts = 10.1.0.0/24
        ah_proposals = sha256
      }
      gmac {
        local_ts = 10.2.0.0/24[udp]
        remote_ts = 10.1.0.0/24[udp]
        esp_proposals = aes256gmac
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
write_ipsecgw "aes256gcm16-prfsha384-x25519" "aes256gcm16" none "a long shared secret"
# A second child: a host-to-host tunnel between the gateways (no selectors: their addresses).
$PY - "$WORK/gw-a.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["connections"]["site-b"]["children"]["hosts"] = {"esp_proposals": ["aes128gcm16"]}
c["connections"]["site-b"]["children"]["lan"]["esp_proposals"].append("aes256gmac")
json.dump(c, open(sys.argv[1], "w"), indent=1)
PYEOF
start_ipsecgw
timeout 20 swanctl --initiate --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
check "modes: the ESP tunnel is up" wait_installed
timeout 20 swanctl --initiate --ike gw-a --child tr --uri "unix://$WORK/charon.vici" > "$WORK/init-tr.log" 2>&1
timeout 20 swanctl --initiate --ike gw-a --child ah --uri "unix://$WORK/charon.vici" > "$WORK/init-ah.log" 2>&1
timeout 20 swanctl --initiate --ike gw-a --child gmac --uri "unix://$WORK/charon.vici" > "$WORK/init-gmac.log" 2>&1
sleep 0.5
grep -E "USE_TRANSP|transport mode|AH|NO_PROP" "$WORK/a.log" | grep -v DEBUG | sed 's/^.*ike: /     ipsecgw: /' | head -6
grep -E "N\(USE_TRANSP\)|CREATE_CHILD_SA response|NO_PROPOSAL|installed|TUNNEL|TRANSPORT|failed" "$WORK/charon.log" |
  sed 's/^.*\] /     charon: /' | tail -8
check "modes: strongSwan asked for transport mode (USE_TRANSPORT_MODE in its request)" \
  grep -qE "generating CREATE_CHILD_SA request .*N\(USE_TRANSP\)" "$WORK/charon.log"
check "modes: ipsecgw answered the transport request in tunnel mode, and logged why" \
  grep -q "asked for transport mode; child hosts is tunnel mode: answering in tunnel mode" "$WORK/a.log"
check "modes: its response carried no USE_TRANSPORT_MODE (RFC 7296 1.3.1)" \
  bash -c "grep -E 'parsed CREATE_CHILD_SA response' '$WORK/charon.log' | head -1 | grep -q 'SA No TSi TSr' &&
           ! grep -E 'parsed CREATE_CHILD_SA response' '$WORK/charon.log' | head -1 | grep -q USE_TRANSP"
# kernel-libipsec cannot route a tunnel between the IKE peers themselves
# ("conflicts with IKE traffic"): strongSwan deletes that Child SA, and
# ipsecgw removes its side with it.
check "modes: strongSwan's DELETE of the host-to-host tunnel it cannot install removes ipsecgw's side" \
  grep -q "peer deleted Child SA site-b/hosts/" "$WORK/a.log"
check "modes: strongSwan proposed AH" grep -qE "generating CREATE_CHILD_SA request .*SA" "$WORK/charon.log"
check "modes: ipsecgw refused the AH proposal for its ESP child, and logged why" \
  grep -q "no acceptable ESP proposal for child lan: the peer proposes AH, the child is ESP" "$WORK/a.log"
check "modes: strongSwan received NO_PROPOSAL_CHOSEN" grep -q "received NO_PROPOSAL_CHOSEN notify" "$WORK/charon.log"
# ESP with AES-GMAC (RFC 4543 ENCR_NULL_AUTH_AES_GMAC, 256-bit key): the
# negotiation agrees on both ends, narrowed to udp; libipsec has no
# NULL_AES_GMAC context ("unsupported AEAD algorithm"), so strongSwan deletes
# it again. (GMAC traffic: the scapy oracle and ike_modes_test.sh.)
check "modes: strongSwan selected ESP:NULL_AES_GMAC_256 from ipsecgw's answer" \
  grep -q "selected proposal: ESP:NULL_AES_GMAC_256" "$WORK/charon.log"
check "modes: ipsecgw installed it as aes256gmac, narrowed to udp" \
  grep -qE "site-b/lan/.* installed: ESP tunnel aes256gmac, .*\[17\] === .*\[17\]" "$WORK/a.log"
check "modes: the IKE SA is still up on both sides" \
  bash -c "$(declare -f swan list_sas); WORK='$WORK'; list_sas && grep -q ESTABLISHED '$WORK/sas.txt'"
check "modes: the ESP tunnel still carries traffic A->B" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2
check "modes: and B->A" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2
# A new exchange on the same IKE SA: strongSwan rekeys the lan child.
timeout 20 swanctl --rekey --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
sleep 1
check "modes: the IKE SA takes a new exchange (Child SA rekey) afterwards" \
  bash -c "[ \$(grep -c 'Child SA site-b/lan/.* installed' '$WORK/a.log') -ge 2 ]"
check "modes: traffic after the rekey" ip netns exec "$NS-ha" ping -c 2 -i 0.2 -W 2 -q 10.2.0.2
cp "$WORK/charon.log" "$WORK/charon-modes.log"
stop_all

# Wrong PSK.
echo "== wrong PSK"
netns_teardown "$NS"; netns_setup "$NS"
start_charon
write_swanctl "aes256gcm16-prfsha384-x25519" "aes256gcm16" none "the right secret"
write_ipsecgw "aes256gcm16-prfsha384-x25519" "aes256gcm16" none "a wrong secret"
start_ipsecgw
timeout 20 swanctl --initiate --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
sleep 1.5
check "wrong PSK: ipsecgw logs the authentication failure" grep -q "AUTHENTICATION_FAILED" "$WORK/a.log"
check "wrong PSK: strongSwan receives AUTHENTICATION_FAILED" grep -q "AUTHENTICATION_FAILED" "$WORK/charon.log"
check "wrong PSK: no Child SA in ipsecgw" no_match 'Child SA .* installed' "$WORK/a.log"
check "wrong PSK: no IKE SA in strongSwan" test "$(sas_count ESTABLISHED)" = 0
check "wrong PSK: counted" test "$(stat_ike auth_failed)" -ge 1
stop_all

if [ "$FAIL" -ne 0 ]; then
  echo "--- last ipsecgw log lines"; tail -30 "$WORK/a.log"
  echo "--- last charon log lines"; tail -30 "$WORK/charon.log"
fi
test_finish
