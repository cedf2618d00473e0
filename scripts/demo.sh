#!/usr/bin/env bash
# `npm run demo`: the seed's walkthrough, for real, as users deploy the product. Brings up the lab
# with a real node (miniupnpd as the router; kube-apiserver, kubelet, kube-proxy and containerd as
# the cluster; the images built here), applies manifests/, creates the example with real nginx
# pods, and shows `kubectl get service`, `upnpc -l` and a curl from the Internet side. Tears down
# after. The first run builds the Kubernetes binaries and the images (with progress) and caches them.
#
#   npm run demo -- --process    the faster process mode: the controller as a process on the node,
#                                no kubelet (a small server stands in for nginx on the nodePort)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
mode=real-node
for arg in "$@"; do
  case "$arg" in
    --process) mode=process ;;
    *) echo "[demo] unknown option $arg (--process)" >&2; exit 2 ;;
  esac
done
[ -x node_modules/.bin/node ] || npm ci --no-audit --no-fund
export PATH="$root/node_modules/.bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "[demo] the lab needs root (network namespaces, nftables)" >&2; exit 1; }

started=$(date +%s)
if [ "$mode" = process ]; then
  bash scripts/lab/install-deps.sh
  bash scripts/lab/build-control-plane.sh >/dev/null
  echo "[demo] starting the lab (router, cluster, node)..." >&2
  exec bash scripts/lab/in-lab.sh "demo-$$" -- node scripts/demo-process.ts
fi

bash scripts/lab/install-deps.sh --real-node
bash scripts/lab/build-control-plane.sh --real-node >/dev/null
echo "[demo] starting the lab with a real node (router, cluster, containerd, kubelet, kube-proxy; images built or found cached)..." >&2
bash scripts/lab/in-lab.sh "demo-$$" --real-node -- node scripts/demo-real-node.ts
echo "[demo] done in $(( $(date +%s) - started )) s, the lab torn down" >&2
