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

# shellcheck source=../cluster/gobuild.sh
source "$here/../cluster/gobuild.sh"

what="temporal server $TEMPORAL_VERSION"
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
  want_pin sandbox/temporal/go/server "$here/go/server" go.temporal.io/server "$TEMPORAL_VERSION" || bad=1
  want_pin sandbox/temporal/go/ui "$here/go/ui" github.com/temporalio/ui-server/v2 "$TEMPORAL_UI_VERSION" || bad=1
  return $bad
}

build() {
  is_cached && return 0
  check_pins
  begin_build
  mkdir -p "$tmp/bin"

  echo "building temporal server $TEMPORAL_VERSION: server, sql tool"
  (cd "$here/go/server" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/temporal-server" go.temporal.io/server/cmd/server)
  (cd "$here/go/server" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/temporal-sql-tool" go.temporal.io/server/cmd/tools/sql)
  echo "building temporal ui-server $TEMPORAL_UI_VERSION"
  (cd "$here/go/ui" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/temporal-ui-server" github.com/temporalio/ui-server/v2/cmd/server)

  "$tmp/bin/temporal-server" --help >/dev/null 2>&1 || { echo "build.sh: temporal-server does not run" >&2; exit 1; }
  "$tmp/bin/temporal-sql-tool" --help >/dev/null 2>&1 || { echo "build.sh: temporal-sql-tool does not run" >&2; exit 1; }
  "$tmp/bin/temporal-ui-server" --help >/dev/null 2>&1 || { echo "build.sh: temporal-ui-server does not run" >&2; exit 1; }
  finish_build
}

case "${1:-build}" in
  pin) pin ;;
  build) build ;;
  *) echo "usage: $0 [build|pin]" >&2; exit 2 ;;
esac
