#!/usr/bin/env bash
# Builds the test Kubernetes control plane (tests/apiserver: kube-apiserver + embedded etcd, from the
# upstream k8s.io/kubernetes Go module) and a matching kubectl, once per version, into a cache outside
# the clone. Prints the directory holding `kube-harness` and `kubectl`.
#
# The cache key is the hash of the harness sources (go.mod, go.sum, main.go) and of this script, so a
# second `make test` reuses the binaries and an upgrade of Kubernetes rebuilds them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/tests/apiserver"
k8s_version=$(sed -n 's/^[[:space:]]*k8s.io\/kubernetes v\([0-9.]*\)$/\1/p' "$src/go.mod" | head -n1)
[ -n "$k8s_version" ] || { echo "build-harness: cannot read the k8s.io/kubernetes version from $src/go.mod" >&2; exit 1; }
key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" "$0" | sha256sum | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ecs-image-operator/apiserver-v$k8s_version-$key"

if [ -x "$cache/kube-harness" ] && [ -x "$cache/kubectl" ]; then
  echo "$cache"
  exit 0
fi

command -v go >/dev/null || { echo "build-harness: Go is required to build kube-apiserver from k8s.io/kubernetes" >&2; exit 1; }
minor=$(echo "$k8s_version" | cut -d. -f2)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=v$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

echo "build-harness: building kube-apiserver v$k8s_version and kubectl (first time only, ~10-20 min on 2 cores)" >&2
tmp="$cache.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
(
  cd "$src"
  export CGO_ENABLED=0
  go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-harness" .
  go build -trimpath -ldflags "$ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
) >&2
rm -rf "$cache"
mv "$tmp" "$cache"
trap - EXIT
echo "$cache"
