#!/usr/bin/env bash
# IKEv1 interop with strongSwan 5.9.8 (charon + kernel-libipsec, swanctl with
# version = 1), in network namespaces: ipsecgw on gateway A, charon on B, a
# host behind each. Main Mode with three suites (one of them 3DES/SHA-1/
# MODP1024, as the reference documents configure it) initiated from either
# side, Quick Mode with and without PFS, ping and a checksummed TCP transfer
# each time; IPsec SA and ISAKMP SA rekeys under ping; DELETE from either
# side; DPD noticing a killed charon; ipsecgw behind an nftables masquerade
# floating to 4500; a wrong PSK. libipsec always encapsulates ESP in UDP
# (charon fakes NAT detection), so every case here floats to 4500.
set -uo pipefail
IPSECGW=${1:?usage: strongswan_ikev1_test.sh path/to/ipsecgw}
IPSECGW=$(readlink -f "$IPSECGW")
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
PY=/usr/bin/python3
CHARON=/usr/lib/ipsec/charon
require_root
require_tools "$CHARON" swanctl tcpdump tshark nft "$PY" nc ike-scan

test_init igv1
source "$HERE/strongswan-lib.sh"
INSTALLED_RE="IPsec SA .* installed"

# write_swanctl IKE_PROPOSAL ESP_PROPOSAL START_ACTION PSK
# SW_REMOTE, SW_CHILD_REKEY, SW_REAUTH, SW_DPD override defaults.
write_swanctl() {
  cat > "$WORK/swanctl.conf" <<CONF
connections {
  gw-a {
    version = 1
    aggressive = ${SW_AGGR:-no}
    local_addrs = 198.51.100.2
    remote_addrs = ${SW_REMOTE:-198.51.100.1}
    proposals = $1
    reauth_time = ${SW_REAUTH:-4h}
    rekey_time = 0
    over_time = 10s
    rand_time = 0s
    dpd_delay = ${SW_DPD:-0}
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
        rekey_time = ${SW_CHILD_REKEY:-3600}
        life_time = ${SW_CHILD_LIFE:-7200}
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
# GW_LOCAL, GW_REKEY, GW_CHILD_REKEY, GW_DPD_DELAY, GW_DPD_TIMEOUT override defaults.
write_ipsecgw() {
  local keylog_json=""
  [ -n "${GW_KEYLOG:-}" ] && keylog_json="\"keylog\": { \"esp\": \"$WORK/keys/esp_sa\", \"ikev1\": \"$WORK/keys/ikev1_decryption_table\" },"
  cat > "$WORK/gw-a.json" <<JSON
{
  "tun": { "name": "ipsec0", "mtu": 1400 },
  $keylog_json
  "connections": {
    "site-b": {
      "version": 1,
      "aggressive": ${GW_AGGR:-false},
      "local_addrs": ["${GW_LOCAL:-198.51.100.1}"],
      "remote_addrs": ["198.51.100.2"],
      "local":  { "auth": "psk", "id": "gw-a.example" },
      "remote": { "auth": "psk", "id": "gw-b.example" },
      "proposals": ["$1"],
      "dpd_delay": ${GW_DPD_DELAY:-0},
      "dpd_timeout": ${GW_DPD_TIMEOUT:-0},
      "rekey_time": ${GW_REKEY:-14400},
      "children": {
        "lan": {
          "local_ts": ["10.1.0.0/24"],
          "remote_ts": ["10.2.0.0/24"],
          "esp_proposals": ["$2"],
          "start_action": "$3",
          "rekey_time": ${GW_CHILD_REKEY:-3600}
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
  local gw_start=none
  [ "$who" = ipsecgw ] && gw_start=start
  write_swanctl "$ike" "$esp" none "a long shared secret"
  write_ipsecgw "$ike" "$esp" "$gw_start" "a long shared secret"
  if [ -n "${CAPTURE:-}" ]; then
    ip netns exec "$NS-gb" timeout 60 tcpdump -i "$NS-w1" -U --immediate-mode -w "$WORK/interop.pcap" udp 2>/dev/null &
    DUMP=$!
    sleep 0.5
  fi
  start_ipsecgw
  if [ "$who" = strongswan ]; then
    timeout 20 swanctl --initiate --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > "$WORK/init.log" 2>&1
  fi
  check "$name: ISAKMP SA and IPsec SA up on both sides" wait_installed
  check "$name: strongSwan lists an IKEv1 SA, ESTABLISHED, INSTALLED, TUNNEL-in-UDP" \
    bash -c "$(declare -f swan list_sas); WORK='$WORK'; list_sas && grep -q 'IKEv1' '$WORK/sas.txt' && grep -q ESTABLISHED '$WORK/sas.txt' && grep -q 'INSTALLED, TUNNEL-in-UDP' '$WORK/sas.txt'"
  check "$name: Main Mode floated to 4500 (strongSwan's NAT-D says NAT)" grep -qE "NAT-T|floating to port 4500" "$WORK/a.log"
  check "$name: ping A->B" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2
  check "$name: ping B->A" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2
  check "$name: TCP 2 MB A->B, SHA-256 matches" tcp_transfer "$NS-ha" 10.2.0.2 "$NS-hb" 2000000
  check "$name: TCP 2 MB B->A, SHA-256 matches" tcp_transfer "$NS-hb" 10.1.0.2 "$NS-ha" 2000000
  if [ -n "${CAPTURE:-}" ]; then stop_capture "$DUMP" "$WORK/interop.pcap"; fi
}

mkdir -p "$WORK/keys"
GW_KEYLOG=1 CAPTURE=1 run_case "MM AES128-SHA256-MODP2048, QM without PFS" ipsecgw "aes128-sha256-modp2048" "aes128-sha256"
# ipsecgw's key log opens the capture to tshark (an independent IKEv1 and
# ESP implementation): Main Mode 5/6, Quick Mode and the ESP inside UDP.
check "keylog: IKEv1 and ESP key logs written with mode 0600" \
  test "$(stat -c %a "$WORK/keys/ikev1_decryption_table")" = 600 -a "$(stat -c %a "$WORK/keys/esp_sa")" = 600
mkdir -p "$WORK/wsconf/wireshark"
cp "$WORK/keys/esp_sa" "$WORK/keys/ikev1_decryption_table" "$WORK/wsconf/wireshark/"
tshark_dec() { XDG_CONFIG_HOME="$WORK/wsconf" HOME="$WORK/wsconf" tshark -n -r "$WORK/interop.pcap" \
  -o esp.enable_encryption_decode:TRUE "$@" 2>/dev/null; }
tshark_dec -V > "$WORK/dissected.txt"
check "keylog: tshark decrypts Main Mode 5 and 6: both identities" \
  bash -c "grep -q 'Identification Data:gw-a.example' '$WORK/dissected.txt' && grep -q 'Identification Data:gw-b.example' '$WORK/dissected.txt'"
check "keylog: tshark decrypts Quick Mode: three messages, the client subnets, ESP proposals" \
  bash -c "[ \$(grep -c 'Exchange type: Quick Mode' '$WORK/dissected.txt') -eq 3 ] &&
           grep -q 'Identification Data:10.1.0.0/255.255.255.0' '$WORK/dissected.txt' &&
           grep -q 'Protocol ID: IPSEC_ESP' '$WORK/dissected.txt'"
check "keylog: tshark decrypts the ESP in UDP (ICMP between the hosts inside)" \
  bash -c "$(declare -f tshark_dec); WORK='$WORK'; tshark_dec -Y 'icmp && ip.src == 10.1.0.2' | grep -q 'Echo (ping) request'"
mkdir -p "$WORK/nokeys/wireshark"
check "keylog: without the key log tshark reads neither identity (negative control)" \
  bash -c "XDG_CONFIG_HOME='$WORK/nokeys' HOME='$WORK/nokeys' tshark -n -V -r '$WORK/interop.pcap' > '$WORK/nokeys.txt' 2>/dev/null &&
           grep -q 'Exchange type: Identity Protection' '$WORK/nokeys.txt' && ! grep -q 'Identification Data:gw-' '$WORK/nokeys.txt'"
check "status: ipsecgw shows the ISAKMP SA as IKEv1, its IPsec SA and selectors" \
  bash -c "'$IPSECGW' status > '$WORK/status.txt' && grep -q 'ESTABLISHED, IKEv1, initiator' '$WORK/status.txt' && grep -q '10.1.0.0/24 === 10.2.0.0/24' '$WORK/status.txt'"
check "counted: one Main Mode and one Quick Mode" \
  bash -c "sleep 1.2; test \"\$($PY -c \"import json; j=json.load(open('$WORK/a.json'))['ike']; print(j['ikev1_main_mode_done'], j['ikev1_quick_mode_done'])\")\" = '1 1'"
run_case "MM 3DES-SHA1-MODP1024, QM 3DES-SHA1" strongswan "3des-sha1-modp1024" "3des-sha1"
run_case "MM AES256-SHA384-ECP384, QM AES-GCM with PFS" ipsecgw "aes256-sha384-ecp384" "aes256gcm16-ecp384"
check "PFS: ipsecgw's IPsec SA says PFS" grep -q "IPsec SA .* installed: .*, PFS" "$WORK/a.log"
run_case "MM AES128-SHA1-MODP2048, QM with PFS" strongswan "aes128-sha1-modp2048" "aes128-sha1-modp2048"
check "PFS: ipsecgw's IPsec SA says PFS" grep -q "IPsec SA .* installed: .*, PFS" "$WORK/a.log"

# Aggressive Mode, both roles: strongSwan answers it only with its
# i_dont_care_about_security_and_use_aggressive_mode_psk switch; ipsecgw
# only for a connection with "aggressive": true.
export CHARON_EXTRA="i_dont_care_about_security_and_use_aggressive_mode_psk = yes"
SW_AGGR=yes GW_AGGR=true run_case "Aggressive Mode AES128-SHA256-MODP2048" ipsecgw "aes128-sha256-modp2048" "aes128gcm16"
check "Aggressive Mode: ipsecgw initiated Aggressive Mode" grep -q "initiating Aggressive Mode" "$WORK/a.log"
check "Aggressive Mode: strongSwan answered it" grep -q "parsed AGGRESSIVE request 0" "$WORK/charon.log"
SW_AGGR=yes GW_AGGR=true run_case "Aggressive Mode 3DES-SHA1-MODP1024" strongswan "3des-sha1-modp1024" "aes128-sha1"
check "Aggressive Mode: strongSwan initiated Aggressive Mode" grep -q "initiating Aggressive Mode" "$WORK/charon.log"
unset CHARON_EXTRA

# DELETE from ipsecgw (SIGTERM) reaches strongSwan.
stop_gw "$IGW"
sleep 0.5
check "ipsecgw's DELETE on shutdown is logged by strongSwan" grep -qE "received DELETE for (IKE_SA|ESP CHILD_SA)" "$WORK/charon.log"
check "strongSwan has no SA left" test "$(sas_count ESTABLISHED)" = 0
stop_all

# Rekeys under ping: strongSwan rekeys the IPsec SA every 6 s (Quick Mode
# with our responder) and reauthenticates the ISAKMP SA every 10 s; ipsecgw
# rekeys its own IPsec SA every 8 s too.
echo "== rekey: IPsec SAs every 6-8 s from both ends, ISAKMP SA every 10 s, under ping"
netns_teardown "$NS"; netns_setup "$NS"
start_charon
SW_CHILD_REKEY=6 SW_CHILD_LIFE=12 SW_REAUTH=10 write_swanctl "aes128-sha256-modp2048" "aes128gcm16" none "a long shared secret"
GW_CHILD_REKEY=8 write_ipsecgw "aes128-sha256-modp2048" "aes128gcm16" none "a long shared secret"
start_ipsecgw
timeout 20 swanctl --initiate --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
check "rekey: ISAKMP SA and IPsec SA up" wait_installed
ip netns exec "$NS-ha" ping -c 100 -i 0.2 -W 1 10.2.0.2 > "$WORK/ping.log" 2>&1
cp "$WORK/a.log" "$WORK/a-rekey.log"; cp "$WORK/charon.log" "$WORK/charon-rekey.log"
installed=$(grep -c "IPsec SA .* installed" "$WORK/a.log")
echo "     ipsecgw installed $installed IPsec SAs; $(grep -o '[0-9]* received' "$WORK/ping.log") of 100 pings"
check "rekey: ipsecgw installed the rekeyed IPsec SAs ($installed)" test "$installed" -ge 4
check "rekey: ipsecgw rekeyed an IPsec SA itself" grep -q "rekeying IPsec SA" "$WORK/a.log"
check "rekey: strongSwan re-established the ISAKMP SA (a second Main Mode)" \
  test "$(grep -c 'ISAKMP SA established' "$WORK/a.log")" -ge 2
check "rekey: old IPsec SAs deleted" grep -qE "IPsec SA .* deleted" "$WORK/a.log"
check "rekey: no ping lost across rekeys" grep -q " 0% packet loss" "$WORK/ping.log"
check "rekey: strongSwan saw no errors" no_match 'INVALID_HASH|PAYLOAD_MALFORMED|verification failed|NO_PROPOSAL_CHOSEN' "$WORK/charon.log"
check "rekey: one IPsec SA pair in strongSwan in the end" \
  bash -c "sleep 1; $(declare -f swan list_sas); WORK='$WORK'; list_sas && [ \$(grep -c INSTALLED '$WORK/sas.txt') -eq 1 ]"
timeout 10 swanctl --terminate --ike gw-a --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
sleep 0.5
check "DELETE from strongSwan clears ipsecgw's SAs" grep -q "ISAKMP SA deleted by the peer" "$WORK/a.log"
check "no IPsec SA left in ipsecgw" bash -c "sleep 1.2; $PY -c \"import json,sys; sys.exit(json.load(open('$WORK/a.json'))['active_sas'])\""
stop_all

# ipsecgw rekeys the ISAKMP SA itself (a new Main Mode, the IPsec SA moves
# to it, the old ISAKMP SA is deleted), under ping.
echo "== phase-1 rekey by ipsecgw every 8 s, under ping"
netns_teardown "$NS"; netns_setup "$NS"
start_charon
write_swanctl "aes128-sha256-modp2048" "aes128gcm16" none "a long shared secret"
GW_REKEY=8 write_ipsecgw "aes128-sha256-modp2048" "aes128gcm16" start "a long shared secret"
start_ipsecgw
check "phase-1 rekey: ISAKMP SA and IPsec SA up" wait_installed
ip netns exec "$NS-ha" ping -c 100 -i 0.2 -W 1 10.2.0.2 > "$WORK/ping.log" 2>&1
echo "     $(grep -c 'ISAKMP SA established' "$WORK/a.log") ISAKMP SAs; $(grep -o '[0-9]* received' "$WORK/ping.log") of 100 pings"
check "phase-1 rekey: ipsecgw made new ISAKMP SAs (at least 2 rekeys)" \
  test "$(grep -c 'rekeying the ISAKMP SA' "$WORK/a.log")" -ge 2
check "phase-1 rekey: the old ISAKMP SAs were deleted" grep -q "ISAKMP SA deleted (rekeyed by" "$WORK/a.log"
check "phase-1 rekey: strongSwan got the DELETEs" grep -q "received DELETE for IKE_SA" "$WORK/charon.log"
check "phase-1 rekey: no ping lost" grep -q " 0% packet loss" "$WORK/ping.log"
# ipsecgw deletes a replaced ISAKMP SA kReplacedDeleteDelay (2 s) after
# its successor is up: a rekey under way when the pings end leaves two
# for that long. The end state is checked once nothing is under way.
check "phase-1 rekey: strongSwan has one ISAKMP SA and one IPsec SA pair in the end" \
  bash -c "$(declare -f swan list_sas); WORK='$WORK'; for i in \$(seq 12); do sleep 0.5; list_sas && [ \$(grep -c ESTABLISHED '$WORK/sas.txt') -eq 1 ] && [ \$(grep -c INSTALLED '$WORK/sas.txt') -eq 1 ] && exit 0; done; exit 1"
check "phase-1 rekey: ping afterwards" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2
stop_all

# DPD: charon killed; ipsecgw's R-U-THERE goes unanswered.
echo "== DPD: strongSwan killed"
netns_teardown "$NS"; netns_setup "$NS"
start_charon
CHARON_PID=${PIDS[-1]}
SW_DPD=2s write_swanctl "aes128-sha256-modp2048" "aes128-sha256" none "a long shared secret"
GW_DPD_DELAY=2 GW_DPD_TIMEOUT=4 write_ipsecgw "aes128-sha256-modp2048" "aes128-sha256" start "a long shared secret"
start_ipsecgw
check "DPD: the tunnel is up before strongSwan is killed" wait_installed
check "DPD: R-U-THERE answered meanwhile, both ways" \
  bash -c "sleep 4.5; ! grep -q 'peer considered dead' '$WORK/a.log' && grep -q 'R-U-THERE' '$WORK/a.log' && grep -qE 'DPD|R_U_THERE' '$WORK/charon.log'"
kill -KILL "$CHARON_PID"
t0=$(date +%s%N)
dead_after=-1
for _ in $(seq 150); do
  if grep -q "peer considered dead" "$WORK/a.log"; then dead_after=$((($(date +%s%N) - t0) / 1000000)); break; fi
  sleep 0.1
done
echo "     found dead after ${dead_after} ms (dpd_delay 2 s + dpd_timeout 4 s)"
check "DPD: found dead by dpd_timeout" grep -q "no R-U-THERE-ACK within 4 s (dpd_timeout); peer considered dead" "$WORK/a.log"
check "DPD: within dpd_delay + dpd_timeout (6 s, +1 s slack): ${dead_after} ms" \
  test "$dead_after" -ge 0 -a "$dead_after" -le 7000
check "DPD: its IPsec SA is removed" bash -c "sleep 1.2; $PY -c \"import json,sys; sys.exit(json.load(open('$WORK/a.json'))['active_sas'])\""
stop_all

# NAT: ipsecgw behind an nftables masquerade, initiating.
echo "== NAT: ipsecgw behind nftables masquerade"
netns_teardown "$NS"; netns_setup "$NS"
netns_nat_a "$NS"
start_charon
SW_REMOTE=%any write_swanctl "aes128-sha256-modp2048" "aes128gcm16" none "a long shared secret"
GW_LOCAL=192.168.77.1 write_ipsecgw "aes128-sha256-modp2048" "aes128gcm16" start "a long shared secret"
start_ipsecgw
check "NAT: ISAKMP SA and IPsec SA up through the NAT" wait_installed
check "NAT: ipsecgw floated to 4500" grep -q "NAT detected, floating to port 4500" "$WORK/a.log"
check "NAT: strongSwan saw the peer at the NAT's address, port 4500 mapped" \
  bash -c "$(declare -f swan list_sas); WORK='$WORK'; list_sas && grep -q '198.51.100.254' '$WORK/sas.txt'"
check "NAT: ping A->B" ip netns exec "$NS-ha" ping -c 3 -i 0.2 -W 2 -q 10.2.0.2
check "NAT: ping B->A" ip netns exec "$NS-hb" ping -c 3 -i 0.2 -W 2 -q 10.1.0.2
check "NAT: TCP 2 MB B->A, SHA-256 matches" tcp_transfer "$NS-hb" 10.1.0.2 "$NS-ha" 2000000
stop_all
ip netns del "$NS-mid" 2>/dev/null

# Wrong PSK, from either side.
for who in strongswan ipsecgw; do
  echo "== wrong PSK, $who initiates"
  netns_teardown "$NS"; netns_setup "$NS"
  start_charon
  gw_start=none; [ "$who" = ipsecgw ] && gw_start=start
  write_swanctl "aes128-sha256-modp2048" "aes128-sha256" none "the right secret"
  write_ipsecgw "aes128-sha256-modp2048" "aes128-sha256" "$gw_start" "a wrong secret"
  start_ipsecgw
  if [ "$who" = strongswan ]; then
    timeout 20 swanctl --initiate --ike gw-a --child lan --uri "unix://$WORK/charon.vici" > /dev/null 2>&1
  else
    # ipsecgw's message 5 cannot be read; strongSwan's encrypted answer
    # cannot be read either; ipsecgw runs out its retransmissions (~22 s).
    wait_for "$WORK/a.log" "no answer to Main Mode" 300
  fi
  sleep 1
  if [ "$who" = strongswan ]; then
    check "wrong PSK ($who): ipsecgw says message 5 does not decrypt, a different PSK" \
      grep -q "a different pre-shared key" "$WORK/a.log"
  else
    check "wrong PSK ($who): ipsecgw says why Main Mode failed" \
      grep -qE "a different pre-shared key|AUTHENTICATION-FAILED|INVALID-HASH-INFORMATION|PAYLOAD-MALFORMED" "$WORK/a.log"
  fi
  if [ "$who" = strongswan ]; then
    check "wrong PSK ($who): strongSwan receives AUTHENTICATION-FAILED" grep -qF "N(AUTH_FAILED)" "$WORK/charon.log"
  else
    check "wrong PSK ($who): strongSwan cannot decrypt message 5" grep -q "decryption failed" "$WORK/charon.log"
  fi
  check "wrong PSK ($who): no IPsec SA in ipsecgw" no_match 'IPsec SA .* installed' "$WORK/a.log"
  check "wrong PSK ($who): no SA in strongSwan" test "$(sas_count ESTABLISHED)" = 0
  check "wrong PSK ($who): counted as an authentication failure" bash -c "sleep 1.2; test \$($PY -c \"import json; print(json.load(open('$WORK/a.json'))['ike']['auth_failed'])\") -ge 1"
  if [ "$who" = ipsecgw ]; then
    check "wrong PSK ($who): and as a failed Main Mode" bash -c "test \$($PY -c \"import json; print(json.load(open('$WORK/a.json'))['ike']['ikev1_main_mode_failed'])\") -ge 1"
  fi
  stop_all
done

# ike-scan against an ipsecgw IKEv1 responder.
echo "== ike-scan probes ipsecgw"
netns_teardown "$NS"; netns_setup "$NS"
write_ipsecgw "3des-sha1-modp1024" "aes128-sha256" none "a long shared secret"
start_ipsecgw
ip netns exec "$NS-gb" timeout 20 ike-scan --sport=0 --retry=2 --timeout=500 198.51.100.1 > "$WORK/mm.out" 2>&1
check "ike-scan: Main Mode probe answered with a handshake ike-scan decodes" grep -q "Main Mode Handshake returned" "$WORK/mm.out"
check "ike-scan: the answer chose 3DES/SHA1/modp1024 PSK, as configured" \
  grep -qF "SA=(Enc=3DES Hash=SHA1 Auth=PSK Group=2:modp1024" "$WORK/mm.out"
check "ike-scan: our RFC 3947 NAT-T and DPD vendor IDs are recognised" bash -c "grep -q 'RFC 3947 NAT-T' '$WORK/mm.out' && grep -q 'Dead Peer Detection v1.0' '$WORK/mm.out'"
ip netns exec "$NS-gb" timeout 20 ike-scan --sport=0 --retry=2 --timeout=500 -A --id=gw-b.example \
  --trans=5,2,1,2 198.51.100.1 > "$WORK/am.out" 2>&1
check "ike-scan: Aggressive Mode refused with NO-PROPOSAL-CHOSEN, no hash handed out" \
  bash -c "grep -q 'NO-PROPOSAL-CHOSEN' '$WORK/am.out' && ! grep -q 'Aggressive Mode Handshake returned' '$WORK/am.out'"
check "ike-scan: the refusal is logged with the reason" grep -q "Aggressive Mode is not allowed" "$WORK/a.log"
stop_all

if [ "$FAIL" -ne 0 ]; then
  echo "--- last ipsecgw log lines"; tail -30 "$WORK/a.log"
  echo "--- last charon log lines"; tail -30 "$WORK/charon.log"
fi
test_finish
