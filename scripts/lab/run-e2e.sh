#!/usr/bin/env bash
# `npm run test:e2e [-- files and vitest args]`: brings a lab up, runs the e2e vitest project
# inside the lab's node namespace with EDGE_CCM_LAB_STATE set, and tears the lab down on every
# exit path.
#
# A test file that needs another lab than the shared one says so in its first lines:
#
#   // e2e lab: --real-node --nodes 2
#
# Files are grouped by the lab they ask for; each group runs in a lab of its own, one group at a
# time (files without such a line first, in the shared lab). Test files or directories given as
# arguments select the files; other arguments go to every vitest run (`--outputFile.json=F`
# becomes F, then F with -2, -3… before .json for the later groups).
#
#   EDGE_CCM_LAB_CONTROL_PLANE=0   shared lab: gateway only (no etcd / kube-apiserver)
#   EDGE_CCM_LAB_NODES=1           shared lab: only one node namespace (default 2: node-2 at 192.168.77.11)
#   EDGE_CCM_LAB_KEEP_LOGS=1       keep .lab/<name>/logs after teardown
#   EDGE_CCM_LAB_WAIT_REAL_NODE=S  while another run's lab holds the real node, wait for it up to S
#                                  seconds (default 1800)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
log() { printf '[e2e] %s\n' "$*" >&2; }

selected=()
vitest_args=()
for arg in "$@"; do
  if [[ "$arg" != -* ]] && [ -e "$arg" ]; then selected+=("$arg"); else vitest_args+=("$arg"); fi
done
[ "${#selected[@]}" -gt 0 ] || selected=(test/e2e)
mapfile -t files < <(find "${selected[@]}" -name '*.test.ts' -type f | sort -u)
[ "${#files[@]}" -gt 0 ] || { log "no test files in ${selected[*]}"; exit 1; }

# The lab each file asks for, in order of first appearance (the shared one first). A group's key
# is "lab:" and the file's flags: bash refuses an empty key, which the shared lab's flags are.
declare -A group_files=()
groups=()
for file in "${files[@]}"; do
  key="lab:$(sed -n '1,10s#^// e2e lab: *##p' "$file" | head -1)"
  if [ -z "${group_files[$key]+set}" ]; then
    group_files[$key]=""
    if [ "$key" = "lab:" ]; then groups=("$key" "${groups[@]}"); else groups+=("$key"); fi
  fi
  group_files[$key]+="$file"$'\n'
done

deps=()
build=()
for key in "${groups[@]}"; do
  case " ${key#lab:} " in *" --real-node "*) deps=(--real-node); build=(--real-node) ;; esac
done
bash scripts/lab/install-deps.sh "${deps[@]}"
# What the container image holds (the bundle): the in-cluster tests run it.
bash scripts/build-artifact.sh
if [ "${EDGE_CCM_LAB_CONTROL_PLANE:-1}" != 0 ] || [ "${#build[@]}" -gt 0 ]; then
  bash scripts/lab/build-control-plane.sh "${build[@]}" >/dev/null
fi
# external-dns, for the files that run it beside the controller (built once, cached the same way).
if grep -q 'support/external-dns' "${files[@]}"; then bash scripts/lab/build-external-dns.sh >/dev/null; fi

rc=0
index=0
for key in "${groups[@]}"; do
  index=$((index + 1))
  flags="${key#lab:}"
  mapfile -t group < <(printf '%s' "${group_files[$key]}")
  if [ -z "$flags" ]; then
    up_args=(--nodes "${EDGE_CCM_LAB_NODES:-2}")
    [ "${EDGE_CCM_LAB_CONTROL_PLANE:-1}" = 0 ] && up_args+=(--no-control-plane)
  else
    read -r -a up_args <<<"$flags"
  fi
  # Another test run on this machine may hold the real node (one at a time): take turns with it.
  case " $flags " in *" --real-node "*) up_args+=(--wait-real-node "${EDGE_CCM_LAB_WAIT_REAL_NODE:-1800}") ;; esac
  [ "${EDGE_CCM_LAB_KEEP_LOGS:-0}" = 1 ] && up_args+=(--keep-logs)
  args=()
  for arg in "${vitest_args[@]}"; do
    if [ "$index" -gt 1 ] && [[ "$arg" == --outputFile.json=*.json ]]; then arg="${arg%.json}-$index.json"; fi
    args+=("$arg")
  done
  log "group $index/${#groups[@]}: lab ${up_args[*]}: ${group[*]}"
  group_rc=0
  bash scripts/lab/in-lab.sh "e2e-$$-$index" "${up_args[@]}" -- \
    "$root/node_modules/.bin/node" "$root/node_modules/vitest/vitest.mjs" run --project e2e "${group[@]}" "${args[@]}" || group_rc=$?
  # Interrupted (Ctrl-C, TERM): no further groups.
  if [ "$group_rc" -ge 128 ]; then exit "$group_rc"; fi
  [ "$group_rc" = 0 ] || rc=$group_rc
done
exit "$rc"
