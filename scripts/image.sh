#!/usr/bin/env bash
# The container image without Docker.
#   scripts/image.sh build   `make image`: the Dockerfile's runtime stage, built by buildah with
#                            --timestamp 0 (a reproducible image id) around a host build of the same
#                            static binary, into target/image/ecs-image-operator.oci.tar (oci-archive)
#                            and target/image/oci (OCI layout).
#   scripts/image.sh test    `make image-test`: build, unpack with umoci, and run tests/image.rs, which
#                            runs the image with runc against the real apiserver and the emulator.
# buildah, umoci and runc come from Debian (apt-get install when missing). Where they cannot be had,
# `test` says so plainly and skips; `build` fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-}
out="$root/target/image"
name=ecs-image-operator
tag=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
target=x86_64-unknown-linux-gnu

say() { echo "image: $*" >&2; }

have_tools() { command -v buildah >/dev/null && command -v umoci >/dev/null && command -v runc >/dev/null; }

install_tools() {
  have_tools && return 0
  command -v apt-get >/dev/null || return 1
  say "installing buildah, umoci and runc from Debian (first time only, ~1 min)"
  if [ "$(id -u)" != 0 ]; then
    say "not root: cannot apt-get install"
    return 1
  fi
  { apt-get install -y -q buildah umoci runc || { apt-get update -q && apt-get install -y -q buildah umoci runc; }; } >&2 || return 1
  have_tools
}

build() {
  # Its own target directory outside the clone: the dependencies (most of the ~5 min of a cold
  # build) are then built once per machine, and a fresh clone recompiles only this crate.
  local static_target="${XDG_CACHE_HOME:-$HOME/.cache}/ecs-image-operator/static-target"
  say "building the static release binary (cold: ~5 min on 2 idle cores, longer on a busy machine)"
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$static_target" \
    cargo build --release --locked --quiet --target "$target"
  local binary="$static_target/$target/release/$name"
  if readelf -d "$binary" | grep -q NEEDED || readelf -l "$binary" | grep -qi interpreter; then
    say "$binary is not static (it needs shared libraries)"
    exit 1
  fi

  # The context holds exactly what the Dockerfile's build stage leaves in /out, and the build file
  # is the Dockerfile's runtime stage with `--from=build /out/` read from the context instead.
  local context="$out/context"
  rm -rf "$context"
  mkdir -p "$context"
  cp "$binary" "$context/$name"
  cp /etc/ssl/certs/ca-certificates.crt "$context/"
  sed -n '/^# runtime$/,$p' Dockerfile | sed 's#COPY --from=build /out/#COPY #' >"$context/Containerfile"
  grep -q '^FROM scratch$' "$context/Containerfile" || { say "the Dockerfile has no '# runtime' stage FROM scratch"; exit 1; }

  local store="$out/buildah"
  local b=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
  "${b[@]}" bud --quiet --format oci --timestamp 0 --layers=false -t "$name:$tag" -f "$context/Containerfile" "$context" >/dev/null
  rm -rf "$out/oci" "$out/$name.oci.tar"
  "${b[@]}" push --quiet "$name:$tag" "oci-archive:$out/$name.oci.tar:$name:$tag"
  "${b[@]}" push --quiet "$name:$tag" "oci:$out/oci:$tag"
  say "built $name:$tag, image id $("${b[@]}" images --noheading --no-trunc --format '{{.ID}}' "$name:$tag")"
  say "OCI archive: $out/$name.oci.tar (load with: skopeo copy oci-archive:$out/$name.oci.tar docker://REGISTRY/$name:$tag)"
}

case "$mode" in
  build)
    install_tools || { say "buildah, umoci and runc are needed and could not be installed"; exit 1; }
    build
    ;;
  test)
    if ! install_tools; then
      say "SKIPPED the container image test: buildah, umoci and runc could not be installed (apt-get failed);"
      say "the Dockerfile still builds with Docker. Everything else in make test runs."
      exit 0
    fi
    build
    bundle="$out/bundle"
    rm -rf "$bundle"
    umoci unpack --image "$out/oci:$tag" "$bundle" >/dev/null
    export KUBE_HARNESS_DIR="${KUBE_HARNESS_DIR:-$(scripts/build-harness.sh)}"
    ECS_IMAGE_OPERATOR_BUNDLE="$bundle" cargo test --locked --test image -- --ignored --exact image_runs_a_copy_to_ready
    ;;
  *)
    say "usage: $0 build|test"
    exit 2
    ;;
esac
