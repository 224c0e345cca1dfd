# What the strongSwan interop tests share: charon 5.9.8 with kernel-libipsec
# in gateway B's namespace (its own strongswan.conf, /run and vici socket),
# swanctl against it, ipsecgw in gateway A's namespace. Sourced after
# netns-lib.sh and test_init; uses $WORK, $NS, $IPSECGW, $PY.

# ---- strongSwan on gateway B --------------------------------------------------
start_charon() {
  rm -rf "$WORK/run"
  mkdir -p "$WORK/run"
  rm -f "$WORK/charon.log" "$WORK/charon.vici"
  cat > "$WORK/strongswan.conf" <<CONF
charon {
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
      time_format = %T
      default = 1
      ike = 2
      cfg = 2
      flush_line = yes
    }
  }
  retransmit_tries = 3
  ${CHARON_EXTRA:-}
  retransmit_timeout = 1.0
  fragment_size = ${CHARON_FRAG:-1280}
}
CONF
  ip netns exec "$NS-gb" unshare -m --propagation private sh -c \
    "mount --bind '$WORK/run' /run && exec env STRONGSWAN_CONF='$WORK/strongswan.conf' $CHARON" \
    > "$WORK/charon.out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$WORK/charon.vici" ] && return 0; sleep 0.1; done
  echo "charon did not start:"; cat "$WORK/charon.out" "$WORK/charon.log" 2>/dev/null | tail -20
  return 1
}

swan() { swanctl "$@" --uri "unix://$WORK/charon.vici"; }
# strongSwan's SAs, into $WORK/sas.txt; fails when swanctl does (so a negative
# check on its output cannot pass because swanctl could not answer).
list_sas() { swan --list-sas > "$WORK/sas.txt" 2>&1; }
sas_count() { list_sas && grep -c -- "$1" "$WORK/sas.txt"; }  # prints the count of lines matching

start_ipsecgw() {
  ip netns exec "$NS-ga" "$IPSECGW" run -c "$WORK/gw-a.json" --stats-file "$WORK/a.json" \
    --log-level debug > "$WORK/a.log" 2>&1 &
  IGW=$!
  track_gw "$IGW" "$WORK/a.log"
  wait_for "$WORK/a.log" "gateway: up" 50
}

wait_installed() {  # both sides have the Child SA
  for _ in $(seq 100); do
    grep -qE "${INSTALLED_RE:-Child SA .* installed}" "$WORK/a.log" 2>/dev/null &&
      swan --list-sas 2>/dev/null | grep -q INSTALLED && return 0
    sleep 0.1
  done
  return 1
}

stat_ike() { $PY -c "import json; print(json.load(open('$WORK/a.json'))['ike']['$1'])" 2>/dev/null || echo -1; }

