#!/usr/bin/env bash
# Runs a command inside a lab's node namespace, with the lab brought up first and torn down on
# every exit path (success, failure, Ctrl-C, TERM):
#
#   bash scripts/lab/in-lab.sh NAME [lab up flags...] -- COMMAND [ARGS...]
#
# COMMAND sees EDGE_CCM_LAB_STATE (what test/e2e/support/lab.ts reads). The e2e tests, the
# benchmarks and the demo all run this way.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
node="$root/node_modules/.bin/node"
[ -x "$node" ] || { echo "[lab] node_modules/.bin/node is missing: run npm ci" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "[lab] the lab needs root (network namespaces, nftables)" >&2; exit 1; }

name="$1"
shift
up_args=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  up_args+=("$1")
  shift
done
[ "${1:-}" = "--" ] && shift
[ "$#" -gt 0 ] || { echo "[lab] usage: in-lab.sh NAME [up flags...] -- COMMAND [ARGS...]" >&2; exit 2; }

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

# This shell owns the lab: if it is killed before its trap runs, the next real-node lab takes the
# one it left down.
EDGE_CCM_LAB_OWNER_PID=$$ "$node" scripts/lab/cli.ts up --name "$name" "${up_args[@]}" >/dev/null
lan="$("$node" -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).namespaces.lan)' "$state")"
echo "[lab] lab $name is up; running in $lan: $*" >&2
set +e
ip netns exec "$lan" env EDGE_CCM_LAB_STATE="$state" PATH="$root/node_modules/.bin:$PATH" "$@"
rc=$?
set -e
exit "$rc"
