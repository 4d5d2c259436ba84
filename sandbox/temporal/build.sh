#!/usr/bin/env bash
# Builds the real Temporal server for the production tier (tests marked realtemporal), once, into
#   ${XDG_CACHE_HOME:-~/.cache}/kepler/temporal/<TEMPORAL_VERSION>/
#     bin/   temporal-server  temporal-sql-tool  temporal-ui-server (the web UI, assets embedded)
#     STAMP  the version it was built from
# outside the repository. The versions are pinned in sandbox/cluster/versions.env, next to the
# Kubernetes ones: go.temporal.io/server (wrapper module go/server) and
# github.com/temporalio/ui-server/v2 (go/ui). PostgreSQL itself comes from Debian (postgresql).
#
#   build.sh          build unless the cache's STAMP already names this version
#   build.sh pin      rewrite sandbox/temporal/go/*/go.mod and go.sum from versions.env
#
# The SQL tool carries the PostgreSQL schemas (--schema-name postgresql/v12/temporal).
#
# Measured on the 2-core development machine (Go 1.26.8):
#   cold, modules already in the module cache, empty Go build cache: 4 min 27 s
#     (427 s user + 42 s system CPU); 181 MB in the cache
#   a second `make temporal` with this cache present:                0.01 s
#
# Like sandbox/cluster/build.sh: a local toolchain only, one build at a time, into a temporary
# directory renamed into place at the end.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../cluster/versions.env
source "$here/../cluster/versions.env"

if ! command -v go >/dev/null 2>&1; then
  export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || { echo "build.sh: no Go toolchain (go) on PATH or in /usr/local/go/bin" >&2; exit 1; }

export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/kepler/temporal"
cache_layout=1
dest="$cache_root/$TEMPORAL_VERSION"
stamp_text="TEMPORAL_VERSION=$TEMPORAL_VERSION
TEMPORAL_UI_VERSION=$TEMPORAL_UI_VERSION
CACHE_LAYOUT=$cache_layout"

pin() {
  (
    cd "$here/go/server"
    rm -f go.mod go.sum
    go mod init kepler.local/sandbox/temporal/server >/dev/null 2>&1
    go mod edit -go=1.26.0 -require="go.temporal.io/server@$TEMPORAL_VERSION" \
      -tool=go.temporal.io/server/cmd/server -tool=go.temporal.io/server/cmd/tools/sql
    go mod tidy
  )
  (
    cd "$here/go/ui"
    rm -f go.mod go.sum
    go mod init kepler.local/sandbox/temporal/ui >/dev/null 2>&1
    go mod edit -go=1.26.0 -require="github.com/temporalio/ui-server/v2@$TEMPORAL_UI_VERSION" \
      -tool=github.com/temporalio/ui-server/v2/cmd/server
    go mod tidy
  )
  echo "pinned: $(echo "$stamp_text" | tr '\n' ' ')"
}

check_pins() {
  local bad=0
  want() { # dir module version
    local got
    got="$(cd "$here/go/$1" && go list -m -f '{{.Version}}' "$2")"
    if [ "$got" != "$3" ]; then
      echo "build.sh: sandbox/temporal/go/$1/go.mod has $2 $got, versions.env says $3; run sandbox/temporal/build.sh pin" >&2
      bad=1
    fi
  }
  want server go.temporal.io/server "$TEMPORAL_VERSION"
  want ui github.com/temporalio/ui-server/v2 "$TEMPORAL_UI_VERSION"
  return $bad
}

build() {
  if [ -f "$dest/STAMP" ] && [ "$(cat "$dest/STAMP")" = "$stamp_text" ]; then
    echo "temporal server $TEMPORAL_VERSION already built in $dest"
    return 0
  fi
  check_pins
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.lock"
  flock 9
  if [ -f "$dest/STAMP" ] && [ "$(cat "$dest/STAMP")" = "$stamp_text" ]; then
    echo "temporal server $TEMPORAL_VERSION built meanwhile in $dest"
    return 0
  fi
  rm -rf "$cache_root/.build-$TEMPORAL_VERSION".*
  tmp="$(mktemp -d "$cache_root/.build-$TEMPORAL_VERSION.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$tmp/bin"
  local start=$SECONDS

  echo "building temporal server $TEMPORAL_VERSION: server, sql tool"
  (cd "$here/go/server" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/temporal-server" go.temporal.io/server/cmd/server)
  (cd "$here/go/server" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/temporal-sql-tool" go.temporal.io/server/cmd/tools/sql)
  echo "building temporal ui-server $TEMPORAL_UI_VERSION"
  (cd "$here/go/ui" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/temporal-ui-server" github.com/temporalio/ui-server/v2/cmd/server)

  "$tmp/bin/temporal-server" --help >/dev/null 2>&1 || { echo "build.sh: temporal-server does not run" >&2; exit 1; }
  "$tmp/bin/temporal-sql-tool" --help >/dev/null 2>&1 || { echo "build.sh: temporal-sql-tool does not run" >&2; exit 1; }
  "$tmp/bin/temporal-ui-server" --help >/dev/null 2>&1 || { echo "build.sh: temporal-ui-server does not run" >&2; exit 1; }
  printf '%s\n' "$stamp_text" > "$tmp/STAMP"

  if [ -e "$dest" ]; then
    mv "$dest" "$tmp.old"
  fi
  mv "$tmp" "$dest"
  trap - EXIT
  rm -rf "$tmp.old"
  echo "built in $((SECONDS - start)) s: $dest"
}

case "${1:-build}" in
  pin) pin ;;
  build) build ;;
  *) echo "usage: $0 [build|pin]" >&2; exit 2 ;;
esac
