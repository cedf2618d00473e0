#!/usr/bin/env bash
# Builds external-dns from the Go module proxy into a per-version cache outside the repository,
# beside the control plane's. Idempotent: a cached binary that reports the wanted version makes
# this a no-op.
#
#   build-external-dns.sh               build (or find) external-dns
#   build-external-dns.sh --print-dir   the cache directory (nothing is built)
#
# v0.22.0 is the newest release whose go.mod accepts Go 1.26 (v0.23.0 asks for Go 1.27).
# It is built inside its own module, so its go.mod and go.sum choose every dependency, at the
# lowest CPU priority (nice 19): the cold build compiles every DNS provider's SDK. Three of the
# versions it pins are refused by the module proxy (403 "not available"); they are replaced by
# the nearest ones the proxy serves. None of them is on the path the lab uses (the exoscale
# provider, the openshift-route source).
set -euo pipefail

VERSION="${EDGE_CCM_EXTERNAL_DNS_VERSION:-v0.22.0}"
CACHE_ROOT="${EDGE_CCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-ccm}"
CACHE="$CACHE_ROOT/external-dns-$VERSION"
MODULE=sigs.k8s.io/external-dns

log() { printf '[build-external-dns] %s\n' "$*" >&2; }
# shellcheck source=go-build.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build.sh"

case "${1:-}" in
  --print-dir) echo "$CACHE"; exit 0 ;;
  "") ;;
  *) log "unknown option $1 (--print-dir)"; exit 2 ;;
esac

if [ -x "$CACHE/external-dns" ] && "$CACHE/external-dns" --version 2>&1 | grep -qx "$VERSION"; then
  report_cached
fi

prepare_go_build
start=$(date +%s)

log "step 1/3: downloading $MODULE@$VERSION"
dir="$(go mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[ -d "$dir" ] || { log "ERROR: could not download $MODULE@$VERSION from the module proxy"; exit 1; }
# The module cache is read-only; build in a writable copy of the module itself.
cp -r "$dir" "$WORK/src" && chmod -R u+w "$WORK/src" && cd "$WORK/src"

# module=version: the proxy's nearest available version of a refused pin.
replacements=(
  "github.com/exoscale/egoscale/v3=v3.1.50"
  "github.com/openshift/api=v0.0.0-20251015095338-264e80a2b6e7"
  "github.com/openshift/client-go=v0.0.0-20251015124057-db0dee36e235"
)
if [ "$VERSION" = v0.22.0 ]; then
  for pair in "${replacements[@]}"; do go mod edit -replace "${pair%%=*}=${pair%%=*}@${pair#*=}"; done
  log "replaced ${#replacements[@]} pins the module proxy refuses: ${replacements[*]}"
fi
export GOFLAGS=-mod=mod

t0=$(date +%s)
log "step 2/3: downloading its dependencies (every provider's SDK)"
go mod download
log "dependencies downloaded in $(( $(date +%s) - t0 ))s"

t0=$(date +%s)
log "step 3/3: compiling external-dns (a cold build takes several minutes on 2 cores)"
nice -n 19 go build -trimpath -ldflags "-s -w -X $MODULE/pkg/apis/externaldns.Version=$VERSION" -o "$WORK/external-dns" .
mv "$WORK/external-dns" "$CACHE/external-dns"
log "compiled in $(( $(date +%s) - t0 ))s, $(du -h "$CACHE/external-dns" | cut -f1)"

log "external-dns: $("$CACHE/external-dns" --version 2>&1 || true)"
log "done in $(( $(date +%s) - start ))s: $CACHE"
echo "$CACHE"
