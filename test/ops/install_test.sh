#!/usr/bin/env bash
# `cmake --install` puts the binary, the example configurations and the
# systemd unit in the usual places (into a staging prefix here).
set -uo pipefail
BUILD=${1:?usage: install_test.sh BUILD_DIR}
DEST=$(mktemp -d)
trap 'rm -rf "$DEST"' EXIT
FAIL=0
cmake --install "$BUILD" --prefix "$DEST/usr" > "$DEST/install.log" 2>&1 || { cat "$DEST/install.log"; exit 1; }
for f in usr/sbin/ipsecgw usr/lib/systemd/system/ipsecgw.service usr/etc/ipsecgw/ipsecgw.json.example \
         usr/share/doc/ipsecgw/README.md usr/share/doc/ipsecgw/examples/site-to-site.json; do
  if [ -e "$DEST/$f" ]; then echo "ok   $f"; else echo "FAIL $f missing"; FAIL=1; fi
done
if "$DEST/usr/sbin/ipsecgw" check -c "$DEST/usr/etc/ipsecgw/ipsecgw.json.example" > /dev/null; then
  echo "ok   the installed example configuration passes 'ipsecgw check'"
else
  echo "FAIL the installed example configuration"; FAIL=1
fi
if grep -q "^CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE" "$DEST/usr/lib/systemd/system/ipsecgw.service" &&
   grep -q "^ExecStart=.*ipsecgw run -c" "$DEST/usr/lib/systemd/system/ipsecgw.service"; then
  echo "ok   the unit runs the gateway with the three capabilities it needs"
else
  echo "FAIL the systemd unit"; FAIL=1
fi
exit $FAIL
