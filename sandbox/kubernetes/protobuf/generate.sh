#!/usr/bin/env bash
# Regenerates generated/: Python protobuf classes compiled (grpcio-tools' protoc) from the
# generated.proto files of the k8s.io/api and k8s.io/apimachinery Go modules, plus
# generated/gofields.py, the Go JSON tags of the same types (which protobuf fields are
# pointers, omitempty/omitzero or inlined), read from their Go sources with go/ast.
# Needs go (and the Go module proxy) and python3 (for a throwaway venv with grpcio-tools).
set -euo pipefail

K8S_API_VERSION=v0.36.3            # k8s.io/api and k8s.io/apimachinery, as the real cluster
GRPCIO_TOOLS_VERSION=1.85.1        # protoc 35.1: gencode 7.35.1, for the protobuf 7.x runtime
# The API groups the stand-in serves (sandbox/kubernetes/resources.py), autoscaling/v1 for
# the scale subresource; Istio's kinds are CRDs, JSON-only in a real cluster as well.
API_GROUPS=(core/v1 apps/v1 batch/v1 autoscaling/v1 autoscaling/v2 policy/v1 rbac/v1 admissionregistration/v1)
MACHINERY=(pkg/apis/meta/v1 pkg/runtime pkg/runtime/schema pkg/api/resource pkg/util/intstr)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
prefix=sandbox/kubernetes/protobuf/generated      # also the Python package of the output
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && go mod init gen >/dev/null 2>&1 &&
 go mod download "k8s.io/api@$K8S_API_VERSION" "k8s.io/apimachinery@$K8S_API_VERSION")
modcache=$(go env GOMODCACHE)
api_dir="$modcache/k8s.io/api@$K8S_API_VERSION"
machinery_dir="$modcache/k8s.io/apimachinery@$K8S_API_VERSION"

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "grpcio-tools==$GRPCIO_TOOLS_VERSION"

# "k8s.io" is no Python package name: each .proto goes under $prefix/k8s_io/... and its
# imports are rewritten to match, so the generated modules import each other by their
# place in this repository. Package and message names (k8s.io.api.core.v1.Pod) stay.
protos=() go_dirs=()
copy_proto() {  # <module dir> <path under k8s.io/>
  local dest="$work/src/$prefix/k8s_io/$2/generated.proto"
  mkdir -p "$(dirname "$dest")"
  sed -e "s#^import \"k8s.io/#import \"$prefix/k8s_io/#" "$1/generated.proto" > "$dest"
  protos+=("$prefix/k8s_io/$2/generated.proto")
  go_dirs+=("k8s.io.$(echo "$2" | tr / .)=$1")
}
for gv in "${API_GROUPS[@]}"; do copy_proto "$api_dir/$gv" "api/$gv"; done
for pkg in "${MACHINERY[@]}"; do copy_proto "$machinery_dir/$pkg" "apimachinery/$pkg"; done

rm -rf "${root:?}/$prefix"
mkdir -p "$root/$prefix"
"$work/venv/bin/python" -m grpc_tools.protoc -I "$work/src" --python_out="$root" "${protos[@]}"
find "$root/$prefix" -type d -exec touch {}/__init__.py \;

cat > "$work/gofields.go" <<'GO'
// Prints, per protobuf message (Go struct), each protobuf field's Go JSON flags:
// p = pointer, o = omitempty, z = omitzero, i = inlined (json:",inline").
package main

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"strconv"
	"strings"
)

func main() {
	out := map[string]map[string]string{}
	for _, arg := range os.Args[1:] {
		pkg, dir, _ := strings.Cut(arg, "=")
		pkgs, err := parser.ParseDir(token.NewFileSet(), dir, func(fi os.FileInfo) bool {
			return !strings.HasSuffix(fi.Name(), "_test.go")
		}, 0)
		if err != nil {
			panic(err)
		}
		for _, p := range pkgs {
			for _, file := range p.Files {
				ast.Inspect(file, func(n ast.Node) bool {
					spec, ok := n.(*ast.TypeSpec)
					if !ok {
						return true
					}
					st, ok := spec.Type.(*ast.StructType)
					if !ok {
						return true
					}
					fields := map[string]string{}
					for _, f := range st.Fields.List {
						if f.Tag == nil {
							continue
						}
						tag, _ := strconv.Unquote(f.Tag.Value)
						protobuf, name := reflect.StructTag(tag).Get("protobuf"), ""
						if protobuf == "" {
							continue
						}
						for _, part := range strings.Split(protobuf, ",") {
							if strings.HasPrefix(part, "name=") {
								name = part[len("name="):]
							}
						}
						if id, ok := f.Type.(*ast.Ident); ok && name == "" && len(f.Names) == 0 {
							name = strings.ToLower(id.Name[:1]) + id.Name[1:] // embedded, unnamed
						}
						if name == "" {
							continue
						}
						flags := ""
						if _, ptr := f.Type.(*ast.StarExpr); ptr {
							flags += "p"
						}
						opts := strings.Split(reflect.StructTag(tag).Get("json"), ",")[1:]
						for _, opt := range [][2]string{{"omitempty", "o"}, {"omitzero", "z"}, {"inline", "i"}} {
							for _, o := range opts {
								if o == opt[0] {
									flags += opt[1]
								}
							}
						}
						fields[name] = flags
					}
					if len(fields) > 0 {
						out[pkg+"."+spec.Name.Name] = fields
					}
					return true
				})
			}
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}
GO
(cd "$work" && go run gofields.go "${go_dirs[@]}") > "$work/gofields.json"
python3 - "$work/gofields.json" "$root/$prefix/gofields.py" "$K8S_API_VERSION" <<'PY'
import json, sys
fields = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as out:
    out.write(f'"""Generated by ../generate.sh from the Go types of k8s.io/api and '
              f'k8s.io/apimachinery {sys.argv[3]}.\n\nPer protobuf message, each field\'s Go '
              'JSON flags: p pointer, o omitempty, z omitzero, i inlined."""\n\n'
              "FIELDS: dict[str, dict[str, str]] = {\n")
    for message in sorted(fields):
        out.write(f"    {message!r}: {dict(sorted(fields[message].items()))!r},\n")
    out.write("}\n")
PY
echo "generated $(find "$root/$prefix" -name '*_pb2.py' | wc -l) modules in $prefix"
