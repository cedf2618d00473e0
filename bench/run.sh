#!/usr/bin/env bash
# `npm run bench [-- --quick] [-- --profile] [-- --only address,bulk,footprint,startup]`:
# brings up a lab of its own (as scripts/lab/run-e2e.sh does), runs bench/main.ts inside the
# lab's node namespace with EDGE_CCM_LAB_STATE set, and tears the lab down on every exit path.
# Results: bench/results/<timestamp>.json and a table on stdout. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export PATH="$root/node_modules/.bin:$PATH"
node="$root/node_modules/.bin/node"
[ -x "$node" ] || { echo "[bench] node_modules/.bin/node is missing: run npm ci" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "[bench] the lab needs root (network namespaces, nftables)" >&2; exit 1; }

bash scripts/lab/install-deps.sh
bash scripts/lab/build-control-plane.sh >/dev/null

name="bench-$$"
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

"$node" scripts/lab/cli.ts up --name "$name" >/dev/null
lan="$("$node" -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).namespaces.lan)' "$state")"

echo "[bench] lab $name is up; running the benchmarks in $lan" >&2
set +e
ip netns exec "$lan" env EDGE_CCM_LAB_STATE="$state" "$node" "$root/bench/main.ts" "$@"
rc=$?
set -e
exit "$rc"
