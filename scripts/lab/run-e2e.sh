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
export PATH="$root/node_modules/.bin:$PATH"
node="$root/node_modules/.bin/node"
[ -x "$node" ] || { echo "[e2e] node_modules/.bin/node is missing: run npm ci" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "[e2e] the lab needs root (network namespaces, nftables)" >&2; exit 1; }

bash scripts/lab/install-deps.sh
# What the container image holds (dist/ + production node_modules): the in-cluster tests run it.
bash scripts/build-artifact.sh

up_args=(--name "e2e-$$" --nodes "${EDGE_CCM_LAB_NODES:-2}")
if [ "${EDGE_CCM_LAB_CONTROL_PLANE:-1}" = 0 ]; then
  up_args+=(--no-control-plane)
else
  bash scripts/lab/build-control-plane.sh >/dev/null
fi
[ "${EDGE_CCM_LAB_KEEP_LOGS:-0}" = 1 ] && up_args+=(--keep-logs)

name="e2e-$$"
state="$root/.lab/$name/state.json"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  "$node" scripts/lab/cli.ts down --name "$name" --quiet || rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$node" scripts/lab/cli.ts up "${up_args[@]}" >/dev/null
lan="$("$node" -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).namespaces.lan)' "$state")"

echo "[e2e] lab $name is up; running vitest in $lan" >&2
set +e
ip netns exec "$lan" env EDGE_CCM_LAB_STATE="$state" "$node" "$root/node_modules/vitest/vitest.mjs" run --project e2e "$@"
rc=$?
set -e
exit "$rc"
