#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go module proxy into a per-version
# cache outside the repository. Idempotent: a complete cache makes this a no-op.
set -euo pipefail

K8S_VERSION="${EDGE_CCM_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${EDGE_CCM_ETCD_VERSION:-v3.6.14}"
CACHE_ROOT="${EDGE_CCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-ccm}"
CACHE="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

if [ "${1:-}" = "--print-dir" ]; then echo "$CACHE"; exit 0; fi

if [ -x "$CACHE/kube-apiserver" ] && [ -x "$CACHE/kubectl" ] && [ -x "$CACHE/etcd" ]; then
  log "cached: $CACHE"
  echo "$CACHE"
  exit 0
fi

# A non-interactive shell may not have Go on its PATH; look in the standard places.
if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin" "$HOME/sdk/go/bin"; do
    if [ -x "$candidate/go" ]; then PATH="$candidate:$PATH"; break; fi
  done
fi
if ! command -v go >/dev/null 2>&1; then
  log "ERROR: Go is not installed (looked on PATH, /usr/local/go/bin, /usr/lib/go/bin)."
  log "Install Go >= 1.24 (Debian: apt-get install golang-go, or the official tarball in /usr/local/go)."
  exit 1
fi
log "using $(go version)"

mkdir -p "$CACHE"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"
staging_version="v0.$minor.$patch"

start=$(date +%s)
if [ ! -x "$CACHE/kube-apiserver" ] || [ ! -x "$CACHE/kubectl" ]; then
  log "step 1/3: resolving k8s.io/kubernetes@$K8S_VERSION"
  mkdir -p "$WORK/k8s" && cd "$WORK/k8s"
  go mod init edge-ccm-lab/k8s >/dev/null 2>&1
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [ -f "$gomod" ] || { log "ERROR: could not download k8s.io/kubernetes@$K8S_VERSION from the module proxy"; exit 1; }
  # Every staging module is required at v0.0.0; replace each with its published version.
  replaces="$(grep -E '^[[:space:]]*k8s\.io/[a-z0-9-]+ v0\.0\.0[[:space:]]*(//.*)?$' "$gomod" | awk '{print $1}' | sort -u)"
  count=0
  for module in $replaces; do
    go mod edit -replace "$module=$module@$staging_version"; count=$((count + 1))
  done
  log "generated $count replace lines for staging modules at $staging_version"
  go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "step 2/3: downloading modules"
  go mod tidy >/dev/null 2>&1 || go mod download
  log "step 2/3: compiling kube-apiserver and kubectl (about 15 minutes on 2 cores)"
  vpkg=k8s.io/component-base/version
  ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  go build -trimpath -ldflags "$ldflags" -o "$WORK/bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  mv "$WORK/bin/kube-apiserver" "$WORK/bin/kubectl" "$CACHE/"
  log "kube-apiserver and kubectl built in $(( $(date +%s) - start ))s"
fi

if [ ! -x "$CACHE/etcd" ]; then
  log "step 3/3: building etcd $ETCD_VERSION"
  mkdir -p "$WORK/etcd" && cd "$WORK/etcd"
  go mod init edge-ccm-lab/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "$WORK/etcd-bin" go.etcd.io/etcd/server/v3
  mv "$WORK/etcd-bin" "$CACHE/etcd"
fi

# A version print must never fail the build (head closes the pipe early).
log "kube-apiserver: $("$CACHE/kube-apiserver" --version 2>&1 || true)"
log "etcd: $( ("$CACHE/etcd" --version 2>&1 || true) | sed -n 1p)"
log "done in $(( $(date +%s) - start ))s: $CACHE"
echo "$CACHE"
