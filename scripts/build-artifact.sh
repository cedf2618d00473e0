#!/usr/bin/env bash
# Builds what the container image holds, outside Docker: compiled JavaScript in dist/ and a
# production-only node_modules (no devDependencies), in .lab/artifact/. The e2e tests run the
# controller from there, as a non-root user, with the same command line as the image.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="$root/.lab/artifact"
log() { printf '[artifact] %s\n' "$*" >&2; }

log "compiling src/ to dist/"
rm -rf dist
node_modules/.bin/tsc -p tsconfig.build.json

stamp="$(cat package-lock.json | sha256sum | cut -c1-16)"
if [ ! -f "$out/.lock-$stamp" ]; then
  log "installing production dependencies (npm ci --omit=dev)"
  rm -rf "$out"
  mkdir -p "$out"
  cp package.json package-lock.json "$out/"
  (cd "$out" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline >/dev/null)
  touch "$out/.lock-$stamp"
fi
rm -rf "$out/dist"
cp -r dist "$out/dist"
# Readable by the unprivileged user the controller runs as.
chmod -R a+rX "$out"
log "ready: $out (entry dist/bin.js)"
