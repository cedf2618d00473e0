#!/usr/bin/env bash
# Builds what the container image holds, outside a container engine: the bundle (dist/edge-ccm.mjs,
# its lazily loaded chunks and source maps), and nothing else, in .lab/artifact/. The e2e tests run
# the controller from there, as a non-root user, with the same command line as the image.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="$root/.lab/artifact"
log() { printf '[artifact] %s\n' "$*" >&2; }

log "bundling src/bin.ts"
rm -rf "$out"
mkdir -p "$out"
node_modules/.bin/node scripts/bundle.ts
cp dist/edge-ccm*.mjs dist/edge-ccm*.mjs.map "$out/"
# Readable by the unprivileged user the controller runs as.
chmod -R a+rX "$out"
log "ready: $out (entry edge-ccm.mjs)"
