#!/usr/bin/env bash
# Makes the root filesystem of one of the lab's local images, as a tar, from Debian packages
# (mmdebstrap, from the Debian mirror apt already uses) and, for Node, the `node` npm package's
# binary. No container registry is involved.
#
#   rootfs.sh RECIPE ARCH OUT.tar [NODE_BINARY NPM_DIR]
#
# Recipes (stand-ins for images the Dockerfile and the example name):
#   node-slim  Debian minbase + /usr/local/bin/node + npm: what node:*-bookworm-slim holds, with
#              the machine's CA bundle
#   nginx      Debian minbase + nginx-light, answering every request with the pod's name
#   pause      Debian's catatonit as /pause: the pod sandbox's init
set -euo pipefail
recipe=$1 arch=$2 out=$3 node_binary=${4:-} npm_dir=${5:-}
suite=bookworm
mirror="$( (sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\).*/\2/p' \
  /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) | head -1)"
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"

debian() { # variant packages...
  local variant=$1; shift
  local include; include="$(IFS=,; echo "$*")"
  mmdebstrap --quiet --arch="$arch" --variant="$variant" ${include:+--include="$include"} --skip=output/dev \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt "$1"/var/log/*.log' \
    "$suite" "$work/debian.tar" "$mirror"
  mkdir -p "$root" && tar -C "$root" -xf "$work/debian.tar" && rm "$work/debian.tar"
  rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
}

# The machine's CA bundle: Debian's, plus whatever CA the machine adds for a proxy its TLS passes
# through (npm ci in the build needs that one).
ca_bundle() { install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"; }

case "$recipe" in
  node-slim)
    debian minbase ca-certificates
    ca_bundle
    install -D -m 0755 "$node_binary" "$root/usr/local/bin/node"
    mkdir -p "$root/usr/local/lib/node_modules" && cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
    ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
    ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
    ;;
  nginx)
    debian minbase nginx-light
    rm -f "$root"/etc/nginx/sites-enabled/*
    # The answer names the pod that served it (nginx's $hostname is the pod's name).
    cat > "$root/etc/nginx/sites-enabled/default" <<'NGINX'
server {
  listen 80 default_server;
  default_type text/plain;
  location / { return 200 "Welcome to nginx! Served by pod $hostname\n"; }
}
NGINX
    mkdir -p "$root/var/log/nginx"
    ln -sf /dev/stdout "$root/var/log/nginx/access.log"
    ln -sf /dev/stderr "$root/var/log/nginx/error.log"
    ;;
  pause)
    debian extract catatonit
    mkdir -p "$work/pause"
    install -m 0755 "$root/usr/bin/catatonit" "$work/pause/pause"
    root="$work/pause"
    ;;
  *) echo "rootfs.sh: unknown recipe $recipe" >&2; exit 2 ;;
esac
tar --numeric-owner -C "$root" -cf "$out" .
