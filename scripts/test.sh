#!/usr/bin/env bash
# `npm test`: everything, from a fresh clone. Installs what it needs (npm packages, the lab's
# Debian packages, the cached kube-apiserver/etcd build), typechecks, runs the unit tests,
# then the end-to-end tests on the real lab. Every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
step() { printf '\n[test] %s\n' "$*" >&2; }

if [ ! -x node_modules/.bin/node ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi
export PATH="$root/node_modules/.bin:$PATH"
node --version | grep -q '^v24\.' || { echo "[test] node_modules/.bin/node is not Node 24" >&2; exit 1; }

results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT

step "typecheck (tsc --noEmit)"
tsc --noEmit

step "unit tests"
unit_rc=0
vitest run --project unit --reporter=default --reporter=json --outputFile.json="$results/unit.json" || unit_rc=$?

e2e_rc=0
if [ "${EDGE_CCM_SKIP_E2E:-0}" = 1 ]; then
  step "SKIPPING the end-to-end tests: EDGE_CCM_SKIP_E2E=1"
else
  step "lab prerequisites (Debian packages; the Kubernetes binaries, helm and external-dns, built once)"
  bash scripts/lab/install-deps.sh --real-node
  bash scripts/lab/build-control-plane.sh --real-node >/dev/null
  bash scripts/lab/build-external-dns.sh >/dev/null
  step "end-to-end tests on the lab"
  bash scripts/lab/run-e2e.sh --reporter=default --reporter=json --outputFile.json="$results/e2e.json" || e2e_rc=$?
fi

# One closing line over both projects, for people and for CI.
node -e '
  const fs = require("fs")
  let passed = 0, failed = 0, skipped = 0
  for (const file of process.argv.slice(1)) {
    if (!fs.existsSync(file)) continue
    const report = JSON.parse(fs.readFileSync(file, "utf8"))
    passed += report.numPassedTests; failed += report.numFailedTests
    skipped += report.numPendingTests + report.numTodoTests
  }
  console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""))
' "$results/unit.json" "$results"/e2e*.json
[ "$unit_rc" = 0 ] && [ "$e2e_rc" = 0 ]
