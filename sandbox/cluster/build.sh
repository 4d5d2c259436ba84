#!/usr/bin/env bash
# Builds the real Kubernetes control plane for the test tier (tests marked realk8s), once, into
#   ${XDG_CACHE_HOME:-~/.cache}/kepler/k8s/<K8S_VERSION>/
#     bin/   kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok
#     istio/customresourcedefinitions.gen.yaml   (from the istio.io/api module)
#     kwok/stages.yaml   kwok's default stages, as kwokctl configures them (from the kwok module)
#     kwok/logs-crd.yaml kwok's Logs CRD (kwok --enable-crds=Logs: pod logs served from files)
#     STAMP  the versions it was built from
# outside the repository. Every version is pinned in versions.env beside this file.
#
# Measured on the 2-core development machine (Go 1.26.8):
#   cold, empty module cache and Go build cache (all downloads through the proxy): 10 min 02 s
#   cold, modules already in the module cache, empty Go build cache:                6 min 47 s
#     (481 s user + 105 s system CPU, 2 GB peak memory)
#   rebuild with the Go build cache warm (e.g. after a CACHE_LAYOUT bump):          13 s
#   a second `make cluster` with this cache present:                                0.01 s
#
#   build.sh          build unless the cache's STAMP already names these versions
#   build.sh pin      rewrite the wrapper modules' go.mod/go.sum (sandbox/cluster/go/*) from versions.env
#
# The build goes into a temporary directory beside the cache and is renamed into place at the end,
# so an interrupted build never leaves a half-filled cache.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

# shellcheck source=gobuild.sh
source "$here/gobuild.sh"

what="cluster binaries for $K8S_VERSION"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/kepler/k8s"
# bump when what the cache holds changes (the Python launcher checks the files it needs itself)
cache_layout=3
dest="$cache_root/$K8S_VERSION"
stamp_text="K8S_VERSION=$K8S_VERSION
K8S_STAGING_VERSION=$K8S_STAGING_VERSION
ETCD_VERSION=$ETCD_VERSION
KWOK_VERSION=$KWOK_VERSION
ISTIO_API_VERSION=$ISTIO_API_VERSION
CACHE_LAYOUT=$cache_layout"

k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

# The staging modules k8s.io/kubernetes requires at v0.0.0 (its own go.mod replaces them with
# ./staging/src/...; a module that depends on it has to replace them with published versions).
staging_modules() {
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
  sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) v0\.0\.0$#\1#p' "$gomod"
}

pin() {
  local dir
  dir="$here/go/kubernetes"
  (
    cd "$dir"
    rm -f go.mod go.sum
    go mod init kepler.local/sandbox/cluster/kubernetes >/dev/null 2>&1
    go mod edit -go=1.26.0 -require="k8s.io/kubernetes@$K8S_VERSION"
    local m
    for m in $(staging_modules); do
      go mod edit -replace="$m=$m@$K8S_STAGING_VERSION"
    done
    for m in "${k8s_cmds[@]}"; do
      go mod edit -tool="k8s.io/kubernetes/cmd/$m"
    done
    go mod tidy
  )
  dir="$here/go/etcd"
  (
    cd "$dir"
    rm -f go.mod go.sum
    go mod init kepler.local/sandbox/cluster/etcd >/dev/null 2>&1
    go mod edit -go=1.26.0 -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" -tool=go.etcd.io/etcd/server/v3
    go mod tidy
  )
  dir="$here/go/kwok"
  (
    cd "$dir"
    rm -f go.mod go.sum
    go mod init kepler.local/sandbox/cluster/kwok >/dev/null 2>&1
    go mod edit -go=1.26.0 -require="sigs.k8s.io/kwok@$KWOK_VERSION" -tool=sigs.k8s.io/kwok/cmd/kwok
    go mod tidy
  )
  echo "pinned: $(echo "$stamp_text" | tr '\n' ' ')"
}

# go.mod must agree with versions.env (the one place versions are pinned)
check_pins() {
  local bad=0
  want_pin sandbox/cluster/go/kubernetes "$here/go/kubernetes" k8s.io/kubernetes "$K8S_VERSION" || bad=1
  want_pin sandbox/cluster/go/kubernetes "$here/go/kubernetes" k8s.io/api "$K8S_STAGING_VERSION" || bad=1
  want_pin sandbox/cluster/go/kubernetes "$here/go/kubernetes" k8s.io/client-go "$K8S_STAGING_VERSION" || bad=1
  want_pin sandbox/cluster/go/etcd "$here/go/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" || bad=1
  want_pin sandbox/cluster/go/kwok "$here/go/kwok" sigs.k8s.io/kwok "$KWOK_VERSION" || bad=1
  return $bad
}

build() {
  is_cached && return 0
  check_pins
  begin_build
  mkdir -p "$tmp/bin" "$tmp/istio"

  local minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  local major="${K8S_VERSION#v}"; major="${major%%.*}"
  local k8s_ldflags="-s -w"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    k8s_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done

  echo "building kubernetes $K8S_VERSION: ${k8s_cmds[*]}"
  local pkgs=()
  for p in "${k8s_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$p"); done
  (cd "$here/go/kubernetes" && go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/bin/" "${pkgs[@]}")

  echo "building etcd $ETCD_VERSION"
  (cd "$here/go/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3)

  echo "building kwok $KWOK_VERSION"
  (cd "$here/go/kwok" && go build -trimpath -ldflags "-s -w" \
    -o "$tmp/bin/kwok" sigs.k8s.io/kwok/cmd/kwok)

  echo "copying the Istio CRDs from istio.io/api $ISTIO_API_VERSION"
  local istio_dir
  istio_dir="$(go mod download -json "istio.io/api@$ISTIO_API_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  cp "$istio_dir/kubernetes/customresourcedefinitions.gen.yaml" "$tmp/istio/customresourcedefinitions.gen.yaml"
  chmod -R u+w "$tmp/istio"

  # The kwok binary has no stages of its own (kwokctl writes them into its config): the
  # defaults kwokctl uses are node-initialize + node-heartbeat-with-lease (nodes become Ready,
  # leases renewed) and pod-ready + pod-complete + pod-delete (pods Running/Ready at once, Job pods
  # Succeeded, deleted pods removed).
  echo "copying kwok's default stages from sigs.k8s.io/kwok $KWOK_VERSION"
  local kwok_dir
  kwok_dir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "$tmp/kwok"
  local stage first=1
  for stage in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
               pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [ $first = 1 ] || echo "---" >> "$tmp/kwok/stages.yaml"
    first=0
    cat "$kwok_dir/kustomize/stage/$stage" >> "$tmp/kwok/stages.yaml"
  done
  # Logs objects tell kwok which file holds a pod's container log (see sandbox/cluster/podlogs.py)
  cp "$kwok_dir/kustomize/crd/bases/kwok.x-k8s.io_logs.yaml" "$tmp/kwok/logs-crd.yaml"
  chmod -R u+w "$tmp/kwok"

  for p in "${k8s_cmds[@]}" etcd kwok; do "$tmp/bin/$p" --help >/dev/null 2>&1 || { echo "build.sh: $p does not run" >&2; exit 1; }; done
  finish_build
}

case "${1:-build}" in
  pin) pin ;;
  build) build ;;
  *) echo "usage: $0 [build|pin]" >&2; exit 2 ;;
esac
