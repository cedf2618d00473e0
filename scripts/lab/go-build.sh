# Sourced by the lab's Go builds (build-control-plane.sh, build-external-dns.sh), which set
# CACHE and define `log`.

# The cache is complete: say so, print it, and stop.
report_cached() {
  log "cached: $CACHE"
  echo "$CACHE"
  exit 0
}

# Puts Go on PATH (a non-interactive shell may not have it there; the standard places are
# tried) or stops, saying how to install it; then makes the cache and a work directory, WORK,
# removed on exit. Builds are static (CGO_ENABLED=0).
prepare_go_build() {
  if ! command -v go >/dev/null 2>&1; then
    for candidate in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin" "$HOME/sdk/go/bin"; do
      if [ -x "$candidate/go" ]; then PATH="$candidate:$PATH"; break; fi
    done
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "ERROR: Go is not installed (looked on PATH, /usr/local/go/bin, /usr/lib/go/bin)."
    log "Install Go >= 1.26 (Debian: apt-get install golang-go, or the official tarball in /usr/local/go)."
    exit 1
  fi
  log "using $(go version)"
  mkdir -p "$CACHE"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  export CGO_ENABLED=0
}
