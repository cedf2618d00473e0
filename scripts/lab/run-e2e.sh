#!/usr/bin/env bash
# `npm run test:e2e [-- vitest args]`: brings a lab up, runs the e2e vitest project inside the
# lab's node namespace with EDGE_CCM_LAB_STATE set, and tears the lab down on every exit path.
#
#   EDGE_CCM_LAB_CONTROL_PLANE=0   gateway only (no etcd / kube-apiserver)
#   EDGE_CCM_LAB_NODES=1           only one node namespace (default 2: node-2 at 192.168.77.11)
#   EDGE_CCM_LAB_KEEP_LOGS=1       keep .lab/<name>/logs after teardown
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

bash scripts/lab/install-deps.sh
# What the container image holds (dist/ + production node_modules): the in-cluster tests run it.
bash scripts/build-artifact.sh

up_args=(--nodes "${EDGE_CCM_LAB_NODES:-2}")
if [ "${EDGE_CCM_LAB_CONTROL_PLANE:-1}" = 0 ]; then
  up_args+=(--no-control-plane)
else
  bash scripts/lab/build-control-plane.sh >/dev/null
fi
[ "${EDGE_CCM_LAB_KEEP_LOGS:-0}" = 1 ] && up_args+=(--keep-logs)

exec bash scripts/lab/in-lab.sh "e2e-$$" "${up_args[@]}" -- \
  "$root/node_modules/.bin/node" "$root/node_modules/vitest/vitest.mjs" run --project e2e "$@"
