#!/usr/bin/env bash
# Installs distro on this machine (Debian 12, as root) and starts `distro server`.
#
#   hack/install.sh                 build from this checkout, install, start a server
#   INSTALL_DISTRO_SKIP_START=1 hack/install.sh   install only
#   INSTALL_DISTRO_EXEC="server --disable-agent" hack/install.sh   other server flags
#
# Works without systemd (PID 1 here is not an init system): the server runs in the
# background with its log in /var/log/distro.log and its PID in /run/distro.pid.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages and writes /usr/local/bin, /etc/distro, /var/lib/distro)" >&2; exit 1; }

need=()
for pkg in ca-certificates protobuf-compiler pkg-config gcc iproute2 nftables containerd runc; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) and run again" >&2; exit 1; }
log "building distro (release)"
cargo build --release --locked -p distro
target="${CARGO_TARGET_DIR:-target}"
install -m 0755 "$target/release/distro" /usr/local/bin/distro
mkdir -p /etc/distro /var/lib/distro
log "installed /usr/local/bin/distro"

[ "${INSTALL_DISTRO_SKIP_START:-}" = 1 ] && exit 0

if [ -f /run/distro.pid ] && kill -0 "$(cat /run/distro.pid)" 2>/dev/null; then
  log "stopping the running server (PID $(cat /run/distro.pid))"
  kill -TERM "$(cat /run/distro.pid)"
  while kill -0 "$(cat /run/distro.pid)" 2>/dev/null; do sleep 0.2; done
fi
log "starting distro ${INSTALL_DISTRO_EXEC:-server}"
# shellcheck disable=SC2086
nohup /usr/local/bin/distro ${INSTALL_DISTRO_EXEC:-server} >>/var/log/distro.log 2>&1 &
echo $! > /run/distro.pid
for _ in $(seq 1 100); do
  [ -f /etc/distro/distro.yaml ] && break
  kill -0 "$(cat /run/distro.pid)" 2>/dev/null || { tail -20 /var/log/distro.log >&2; exit 1; }
  sleep 0.1
done
log "distro is running (PID $(cat /run/distro.pid), log /var/log/distro.log)"
log "try: distro kubectl get namespaces   (or KUBECONFIG=/etc/distro/distro.yaml kubectl ...)"
