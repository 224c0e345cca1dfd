#!/usr/bin/env bash
# tshark (Wireshark's dissector, an independent IKEv1 implementation) reads
# the encrypted Main Mode messages 5 and 6, a Quick Mode and two Informational
# messages (DPD, DELETE) that ipsecgw's IKEv1 pieces build
# (test/tools/ikev1_mm_pcap), given only the initiator cookie and the
# encryption key: it computes the phase-1 IV from the KE payloads itself. A
# wrong key (the negative control) must leave the identities unreadable.
set -uo pipefail
TOOL=${1:?usage: ikev1_tshark_test.sh path/to/ikev1_mm_pcap}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../scripts/netns-lib.sh"
require_tools tshark
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PASS=0
FAIL=0
check() {
  local what=$1; shift
  if "$@"; then PASS=$((PASS + 1)); echo "ok   $what"; else FAIL=$((FAIL + 1)); echo "FAIL $what"; fi
}
dissect() {  # dissect SUITE [--wrong-key]: tshark's verbose view of the exchange
  rm -rf "$WORK/conf"; mkdir -p "$WORK/conf/wireshark"
  "$TOOL" "$1" "$WORK/mm.pcap" "$WORK/conf/wireshark/ikev1_decryption_table" ${2:-} > /dev/null || return 1
  XDG_CONFIG_HOME="$WORK/conf" HOME="$WORK/conf" tshark -n -V -r "$WORK/mm.pcap" 2> "$WORK/tshark.err"
}
for suite in aes128-sha1-modp2048 aes256-sha256-modp2048 3des-md5-modp1024 aes192-sha512-ecp256; do
  dissect "$suite" > "$WORK/out.txt"
  check "$suite: tshark read six Main Mode messages" test "$(grep -c 'Exchange type: Identity Protection (Main Mode)' "$WORK/out.txt")" -eq 6
  check "$suite: messages 3 and 4 carry two NAT-D payloads each (RFC 3947)" \
    test "$(grep -c 'Payload: NAT-D (RFC 3947) (20)' "$WORK/out.txt")" -eq 4
  check "$suite: message 5 decrypts: the initiator's identity" grep -q 'Identification Data:gw-a.example' "$WORK/out.txt"
  check "$suite: message 6 decrypts (IV chained from message 5): the responder's identity" \
    grep -q 'Identification Data:gw-b.example' "$WORK/out.txt"
  # Main Mode 5, 6; Quick Mode 1, 2, 3; the two Informational messages.
  check "$suite: and their HASH payloads" test "$(grep -c 'Payload: Hash (8)' "$WORK/out.txt")" -eq 7
  check "$suite: three Quick Mode messages" test "$(grep -c 'Exchange type: Quick Mode' "$WORK/out.txt")" -eq 3
  check "$suite: Quick Mode decrypts (phase-2 IV from the last phase-1 block and the M-ID): ESP proposals (and the ESP DELETE)" \
    test "$(grep -c 'Protocol ID: IPSEC_ESP' "$WORK/out.txt")" -eq 3
  check "$suite: Quick Mode: the client identities, as subnets" \
    bash -c "grep -q 'Identification Data:10.1.0.0/255.255.255.0' '$WORK/out.txt' && grep -q 'Identification Data:10.2.0.0/255.255.255.0' '$WORK/out.txt'"
  # The ESP transform (aes128-sha256-modp2048, tunnel, 3600 s) as Wireshark's own tables name it.
  check "$suite: Quick Mode SA, both ways: Transform ID: AES (12)" \
    test "$(grep -c 'Transform ID: AES (12)' "$WORK/out.txt")" -eq 2
  for attr in 'SA-Life-Duration: 3600' 'Group-Description: 2048 bit MODP group' \
              'Encapsulation-Mode: Tunnel' 'Authentication-Algorithm: HMAC-SHA2-256' 'Key-Length: 128'; do
    check "$suite: Quick Mode SA, both ways: $attr" test "$(grep -c "IPsec Attribute .*: $attr" "$WORK/out.txt")" -eq 2
  done
  check "$suite: two Informational messages decrypt: an R-U-THERE (RFC 3706) and a DELETE of an ESP SPI" \
    bash -c "[ \$(grep -c 'Exchange type: Informational (5)' '$WORK/out.txt') -eq 2 ] &&
             grep -q 'Notify Message Type: R-U-THERE (36136)' '$WORK/out.txt' && grep -q 'Delete SPI: 11223344' '$WORK/out.txt'"
  dissect "$suite" --wrong-key > "$WORK/wrong.txt"
  check "$suite: with a wrong key tshark reads no identity and no R-U-THERE (negative control)" \
    bash -c "[ -s '$WORK/wrong.txt' ] && ! grep -qE 'Identification Data:gw-|R-U-THERE' '$WORK/wrong.txt'"
done
if [ "$FAIL" -ne 0 ]; then echo "--- tshark"; grep -E 'Payload|Identification|Hash' "$WORK/out.txt" | head -40; cat "$WORK/tshark.err"; fi
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
