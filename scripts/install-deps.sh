#!/usr/bin/env bash
# Installs what ipsecgw needs to build, test and demo on Debian (bookworm).
# Idempotent: installs only packages that are missing. Must run as root.
set -euo pipefail

build_pkgs=(cmake g++ make pkg-config libssl-dev libboost-dev libcli11-dev
            nlohmann-json3-dev catch2 zlib1g-dev)
test_pkgs=(strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins clang libclang-rt-14-dev iproute2 iputils-ping python3 python3-scapy python3-cryptography
           tcpdump tshark iperf3 netcat-openbsd nftables conntrack wireguard-go ike-scan ethtool)

bench_pkgs=(wireguard-tools)

want=("${build_pkgs[@]}")
case "${1:-all}" in
  build) ;;
  test|demo) want+=("${test_pkgs[@]}") ;;
  all|bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|demo|bench|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
