#!/usr/bin/env bash
# `npm run bench [-- --quick] [-- --profile] [-- --only address,bulk,footprint,startup,listing,flood,everyday]`:
# brings up a lab of its own (as scripts/lab/run-e2e.sh does), runs bench/main.ts inside the
# lab's node namespace with EDGE_CCM_LAB_STATE set, and tears the lab down on every exit path.
# Results: bench/results/<timestamp>.json and a table on stdout. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export PATH="$root/node_modules/.bin:$PATH"

bash scripts/lab/install-deps.sh
bash scripts/lab/build-control-plane.sh >/dev/null
# The controller is measured as the image runs it: the startup snapshot of the bundle.
node scripts/bundle.ts --snapshot-blob >/dev/null

exec bash scripts/lab/in-lab.sh "bench-$$" -- "$root/node_modules/.bin/node" "$root/bench/main.ts" "$@"
