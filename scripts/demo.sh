#!/usr/bin/env bash
# `npm run demo`: the seed's walkthrough, for real. Brings up the lab (miniupnpd as the router,
# kube-apiserver + etcd as the cluster), runs the controller on the node, creates the example,
# and shows `kubectl get service`, `upnpc -l` and a curl from the Internet side. Tears down after.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
[ -x node_modules/.bin/node ] || npm ci --no-audit --no-fund
export PATH="$root/node_modules/.bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "[demo] the lab needs root (network namespaces, nftables)" >&2; exit 1; }

bash scripts/lab/install-deps.sh
bash scripts/lab/build-control-plane.sh >/dev/null

echo "[demo] starting the lab (router, cluster, node)..." >&2
exec bash scripts/lab/in-lab.sh "demo-$$" -- node scripts/demo.ts
