# Sourced first by the scripts the README names (`source scripts/as-root.sh "$@"`):
# they need root (network namespaces, TUN devices, apt-get). As root they
# go on; otherwise they run again through sudo, keeping the environment
# (MODE=, ESP=, FUZZ_SECONDS=, ...), or stop with a message when there is
# no sudo (a fresh Debian machine used as root has none, and needs none).
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E bash "$0" "$@"
  fi
  echo "$(basename "$0"): run as root (it creates network namespaces and TUN devices and installs packages)" >&2
  exit 1
fi
