#!/usr/bin/env bash
# Builds the lab's Kubernetes binaries from the Go module proxy into a per-version cache outside
# the repository. Idempotent: a complete cache makes this a no-op.
#
#   build-control-plane.sh                 kube-apiserver, kubectl, etcd (every lab)
#   build-control-plane.sh --real-node     also kubelet, kube-proxy, kube-scheduler,
#                                          kube-controller-manager and helm (`lab up --real-node`)
#   build-control-plane.sh --print-dir     the cache directory (nothing is built)
#
# Go builds take both cores for minutes: they run at the lowest CPU priority (nice 19).
set -euo pipefail

K8S_VERSION="${EDGE_CCM_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${EDGE_CCM_ETCD_VERSION:-v3.6.14}"
HELM_VERSION="${EDGE_CCM_HELM_VERSION:-v4.3.2}"
CACHE_ROOT="${EDGE_CCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-ccm}"
CACHE="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }
# shellcheck source=go-build.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build.sh"

real_node=0
case "${1:-}" in
  --print-dir) echo "$CACHE"; exit 0 ;;
  --real-node) real_node=1 ;;
  "") ;;
  *) log "unknown option $1 (--real-node, --print-dir)"; exit 2 ;;
esac

# What this run must leave in the cache.
k8s_wanted=(kube-apiserver kubectl)
[ "$real_node" = 1 ] && k8s_wanted+=(kubelet kube-proxy kube-scheduler kube-controller-manager)
k8s_missing=()
for b in "${k8s_wanted[@]}"; do [ -x "$CACHE/$b" ] || k8s_missing+=("$b"); done
etcd_missing=0; [ -x "$CACHE/etcd" ] || etcd_missing=1
# helm is versioned apart from Kubernetes: the cached one must say it is $HELM_VERSION.
helm_missing=0
if [ "$real_node" = 1 ] && ! { [ -x "$CACHE/helm" ] && "$CACHE/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; }; then
  helm_missing=1
fi

if [ "${#k8s_missing[@]}" = 0 ] && [ "$etcd_missing" = 0 ] && [ "$helm_missing" = 0 ]; then
  report_cached
fi

prepare_go_build
export CGO_ENABLED=0 GOFLAGS=-mod=mod
gobuild() { nice -n 19 go build -trimpath "$@"; }

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"
staging_version="v0.$minor.$patch"

start=$(date +%s)
steps=$(( (${#k8s_missing[@]} > 0 ? 1 : 0) + etcd_missing + helm_missing ))
step=0
if [ "${#k8s_missing[@]}" -gt 0 ]; then
  step=$((step + 1))
  log "step $step/$steps: resolving k8s.io/kubernetes@$K8S_VERSION"
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
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${k8s_missing[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
  } > tools.go
  log "step $step/$steps: downloading modules"
  go mod tidy >/dev/null 2>&1 || go mod download
  vpkg=k8s.io/component-base/version
  ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  # One binary at a time, so progress shows and a cold build never holds six links in memory.
  for b in "${k8s_missing[@]}"; do
    t0=$(date +%s)
    log "step $step/$steps: compiling $b (a cold build of all six takes about 10-16 minutes on 2 cores)"
    gobuild -ldflags "$ldflags" -o "$WORK/bin/$b" "k8s.io/kubernetes/cmd/$b"
    mv "$WORK/bin/$b" "$CACHE/"
    log "$b built in $(( $(date +%s) - t0 ))s"
  done
fi

if [ "$etcd_missing" = 1 ]; then
  step=$((step + 1))
  log "step $step/$steps: building etcd $ETCD_VERSION"
  mkdir -p "$WORK/etcd" && cd "$WORK/etcd"
  go mod init edge-ccm-lab/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
  gobuild -ldflags "-s -w" -o "$WORK/etcd-bin" go.etcd.io/etcd/server/v3
  mv "$WORK/etcd-bin" "$CACHE/etcd"
fi

if [ "$helm_missing" = 1 ]; then
  step=$((step + 1))
  t0=$(date +%s)
  log "step $step/$steps: building helm $HELM_VERSION"
  helm_major="${HELM_VERSION%%.*}"
  mkdir -p "$WORK/helm" && cd "$WORK/helm"
  go mod init edge-ccm-lab/helm >/dev/null 2>&1
  go get "helm.sh/helm/$helm_major@$HELM_VERSION" >/dev/null 2>&1
  gobuild -ldflags "-s -w -X helm.sh/helm/$helm_major/internal/version.version=$HELM_VERSION -X helm.sh/helm/$helm_major/internal/version.gitTreeState=clean" \
    -o "$WORK/helm-bin" "helm.sh/helm/$helm_major/cmd/helm"
  mv "$WORK/helm-bin" "$CACHE/helm"
  log "helm built in $(( $(date +%s) - t0 ))s"
fi

# A version print must never fail the build (head closes the pipe early).
log "kube-apiserver: $("$CACHE/kube-apiserver" --version 2>&1 || true)"
log "etcd: $( ("$CACHE/etcd" --version 2>&1 || true) | sed -n 1p)"
if [ "$real_node" = 1 ]; then
  log "kubelet: $("$CACHE/kubelet" --version 2>&1 || true); helm: $("$CACHE/helm" version --short 2>&1 || true)"
fi
log "done in $(( $(date +%s) - start ))s: $CACHE"
echo "$CACHE"
