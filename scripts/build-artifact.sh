#!/usr/bin/env bash
# Builds what the container image holds, outside a container engine: the command as one CommonJS
# file for the startup snapshot (dist/snapshot/edge-ccm.cjs), its source map and build
# configuration, and the snapshot itself, built from it by the pinned Node that runs it, in
# .lab/artifact/. The e2e tests run the controller from there, as a non-root user, with the same
# command line as the image.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="$root/.lab/artifact"
node="$root/node_modules/.bin/node"
log() { printf '[artifact] %s\n' "$*" >&2; }

log "bundling src/bin.ts and src/snapshot.ts"
rm -rf "$out"
mkdir -p "$out"
"$node" scripts/bundle.ts
cp dist/snapshot/edge-ccm.cjs dist/snapshot/edge-ccm.cjs.map dist/snapshot/snapshot.json "$out/"
log "building the startup snapshot"
(cd "$out" && "$node" --snapshot-blob edge-ccm.blob --build-snapshot-config snapshot.json)
# Readable by the unprivileged user the controller runs as.
chmod -R a+rX "$out"
log "ready: $out (node --snapshot-blob edge-ccm.blob -- ARGS)"
