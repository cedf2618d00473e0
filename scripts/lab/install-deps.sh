#!/usr/bin/env bash
# Installs the Debian packages the lab needs. Idempotent: silent when everything is there.
#
#   install-deps.sh               the lab: gateway, control plane, curl
#   install-deps.sh --real-node   also what a real node and its images need: containerd, runc,
#                                 the CNI plugins, podman and mmdebstrap (image builds: the bases,
#                                 the pause image and nginx come from Debian packages)
#   install-deps.sh --arm64       also qemu-user-static and arch-test, for building and starting
#                                 arm64 images
#
# miniupnpd-nftables is only the daemon binary; the separate `miniupnpd` package (init script,
# debconf questions) is not installed, so nothing starts a system miniupnpd. The lab starts its
# own in a network namespace.
set -euo pipefail

packages=(miniupnpd-nftables miniupnpc natpmpc nftables iproute2 curl openssl)
for option in "$@"; do
  case "$option" in
    --real-node) packages+=(containerd runc containernetworking-plugins podman mmdebstrap ca-certificates) ;;
    --arm64) packages+=(qemu-user-static arch-test) ;;
    *) printf '[install-deps] unknown option %s (--real-node, --arm64)\n' "$option" >&2; exit 2 ;;
  esac
done
log() { printf '[install-deps] %s\n' "$*" >&2; }

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing ${missing[*]}, and installing them needs root"
    exit 1
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if command -v debconf-set-selections >/dev/null 2>&1; then
    echo "miniupnpd miniupnpd/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
  fi
  log "apt-get update"
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >/dev/null
  log "installed: ${missing[*]}"
fi

# A miniupnpd in the machine's own network namespace would answer on the real LAN. Stop any
# (one a package may have started) by its PID. Lab gateways run in their own namespaces and are
# left alone.
host_netns="$(readlink /proc/1/ns/net 2>/dev/null || true)"
miniupnpd_bin="$(command -v miniupnpd 2>/dev/null || echo /usr/sbin/miniupnpd)"
for dir in /proc/[0-9]*; do
  pid="${dir#/proc/}"
  exe="$(readlink "$dir/exe" 2>/dev/null || true)"
  [ "$exe" = "$miniupnpd_bin" ] || continue
  [ -n "$host_netns" ] && [ "$(readlink "$dir/ns/net" 2>/dev/null || true)" = "$host_netns" ] || continue
  log "stopping a system miniupnpd in the machine's own namespace: pid $pid"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do [ -d "$dir" ] || break; sleep 0.05; done
  if [ -d "$dir" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
done
