# Sourced by sandbox/cluster/build.sh and sandbox/temporal/build.sh: the Go toolchain they share
# and the cache discipline they share. A build goes into a temporary directory beside the cache
# and is renamed into place at the end, so an interrupted build never leaves a half-filled
# cache; one build at a time (a second waits on the lock, then finds the cache built).
#
# The caller sets: what (a name for messages), cache_root, dest, stamp_text; then
#   is_cached && exit 0       the cache's STAMP names these versions
#   begin_build               lock, check again, make $tmp (removed if the build fails)
#   ... build into $tmp ...
#   finish_build              write STAMP and rename $tmp to $dest
#   want_pin DIR_LABEL DIR MODULE VERSION   (check a wrapper go.mod against versions.env)

if ! command -v go >/dev/null 2>&1; then
  export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || { echo "build.sh: no Go toolchain (go) on PATH or in /usr/local/go/bin" >&2; exit 1; }

# never download another toolchain: the pinned versions are chosen to build with the local Go
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

is_cached() {
  if [ -f "$dest/STAMP" ] && [ "$(cat "$dest/STAMP")" = "$stamp_text" ]; then
    echo "$what ${1:-already} built in $dest"
    return 0
  fi
  return 1
}

begin_build() {
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.lock"
  flock 9
  if is_cached meanwhile; then
    exit 0
  fi
  local base
  base="$cache_root/.build-$(basename "$dest")"
  rm -rf "$base".*  # what an interrupted build left (it never reached the rename)
  tmp="$(mktemp -d "$base.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT TERM
  build_start=$SECONDS
}

finish_build() {
  printf '%s\n' "$stamp_text" > "$tmp/STAMP"
  # into place: the old directory (a different build of this version) aside, the new one in
  if [ -e "$dest" ]; then
    mv "$dest" "$tmp.old"
  fi
  mv "$tmp" "$dest"
  trap - EXIT
  rm -rf "$tmp.old"
  echo "built in $((SECONDS - build_start)) s: $dest"
}

# want_pin LABEL DIR MODULE VERSION: DIR's go.mod requires MODULE at VERSION, or say how to fix it
want_pin() {
  local got
  got="$(cd "$2" && go list -m -f '{{.Version}}' "$3")"
  if [ "$got" != "$4" ]; then
    echo "build.sh: $1/go.mod has $3 $got, versions.env says $4; run $(dirname "$1" | sed 's#/go$##')/build.sh pin" >&2
    return 1
  fi
}
