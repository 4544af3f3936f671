#!/usr/bin/env bash
# `make demo`: the real kube-apiserver, the ECS emulator and the operator on 127.0.0.1; applies
# examples/ (copies, an import, an export, a replication), shows the copies progress to Ready live, then deletes a copy mid-flight and shows
# that the operator cancelled it in ECS. Stops everything when done (or interrupted).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -f .dev/env ]; then
  echo "demo: the apiserver, emulator and operator of 'make up' are already running (see .dev/env)." >&2
  echo "      Use them (set -a; . .dev/env; set +a; \$KUBECTL get imgcp) or stop them with 'make down'," >&2
  echo "      then run 'make demo' again." >&2
  exit 1
fi

# What a fresh clone builds first, with a rough time on 2 cores.
if ! compgen -G "${XDG_CACHE_HOME:-$HOME/.cache}/ecs-image-operator/apiserver-*/kube-harness" >/dev/null; then
  echo "demo: first run: building kube-apiserver and kubectl from source (~5 min on 2 cores, once)"
fi
if [ ! -x target/release/ecs-image-operator ]; then
  echo "demo: first run: compiling the operator in release mode (~5 min on 2 idle cores, longer on a busy machine; once)"
fi

# Everything started here stops on exit, error or Ctrl-C.
trap 'echo; echo "demo: stopping the apiserver, emulator and operator"; scripts/down.sh >/dev/null' EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM
EMULATOR_ARGS="${EMULATOR_ARGS:---copy-seconds 20 --region-concurrency 1}" \
  OPERATOR_ARGS="${OPERATOR_ARGS:---poll-interval 2s}" scripts/up.sh
# shellcheck disable=SC1091
. .dev/env
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
admin() { curl -fsS "$ECS_ENDPOINT/_emulator/$1"; }

echo
echo "== kubectl apply -f examples/, plus a second copy to Shanghai (the emulator runs one copy per"
echo "   region at a time, so it queues) and one to Qingdao that we will delete mid-copy"
k apply -f examples/
cat <<'YAML' | k apply -f -
apiVersion: imageops.dev/v1alpha1
kind: ImageCopy
metadata:
  name: second-to-shanghai
spec:
  sourceRegionId: cn-hangzhou
  sourceImageId: m-demo0001
  destinationRegionId: cn-shanghai
---
apiVersion: imageops.dev/v1alpha1
kind: ImageCopy
metadata:
  name: cancel-me
spec:
  sourceRegionId: cn-hangzhou
  sourceImageId: m-demo0001
  destinationRegionId: cn-qingdao
YAML

echo
echo "== live progress (kubectl get imgcp)"
for _ in $(seq 30); do
  sleep 3
  echo "--- $(date +%T)"
  k get imgcp
  phase=$(k get imgcp cancel-me -o jsonpath='{.status.phase}')
  progress=$(k get imgcp cancel-me -o jsonpath='{.status.progress}')
  if [ "$phase" = Copying ] && [ "${progress%\%}" -ge 40 ] 2>/dev/null; then break; fi
done

image=$(k get imgcp cancel-me -o jsonpath='{.status.imageId}')
echo
echo "== kubectl delete imgcp cancel-me  (mid-copy: the finalizer cancels image $image in ECS)"
k delete imgcp cancel-me --timeout=60s
echo "emulator call counts: $(admin calls | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"])')"
if admin images | grep "\"$image\"" >/dev/null; then
  echo "demo: $image still exists after the delete" >&2
  exit 1
fi
echo "image $image is gone from ECS; events:"
k get events --field-selector involvedObject.name=cancel-me --sort-by=.metadata.creationTimestamp

echo
echo "== the other copies progress to Ready (the queued one starts when the first Shanghai copy is done)"
for _ in $(seq 40); do
  sleep 3
  echo "--- $(date +%T)"
  k get imgcp
  pending=$(k get imgcp -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -vc '^Available$' || true)
  [ "$pending" = 0 ] && break
done
k wait --for=condition=Ready imagecopy --all --timeout=120s
echo
echo "== the import and the export of examples/ (kubectl get ecs-images lists every kind)"
k wait --for=condition=Ready imageimport,imageexport --all --timeout=120s
k get ecs-images
echo
echo "== the ImageReplication of examples/: one ImageCopy per region, one status, a published map"
k wait --for=condition=Ready imagereplication --all --timeout=120s
k get imgrep
k get imgcp -l imageops.dev/replication-uid
echo "ConfigMap golden-images: $(k get configmap golden-images -o jsonpath='{.data}')"
calls=$(admin calls | python3 -c 'import json,sys; print(", ".join(f"{k} {v}" for k, v in sorted(json.load(sys.stdin)["counts"].items())))')
cat <<EOF

== what happened
- A real kube-apiserver, the ECS emulator and the operator ran on 127.0.0.1.
- Each ImageCopy became one CopyImage in ECS; its status showed phase and progress until Ready, and
  the second copy to Shanghai waited in ECS's queue (phase Queued) while the first one ran.
- The ImageImport (ImportImage from OSS) and the ImageExport (ExportImage to OSS) followed their ECS
  tasks to Ready the same way.
- The ImageReplication made one ImageCopy per destination region, showed them as one status
  (regions ready, overall progress) and published the region → image map to ConfigMap golden-images.
- Deleting cancel-me mid-copy ran its finalizer: CancelCopyImage in ECS, the half-made image gone,
  then the object went away (the events above).
- ECS calls the emulator answered: $calls

== explore further
  make up                                     # the same set in the background
  set -a; . .dev/env; set +a                  # KUBECONFIG, KUBECTL, ECS_ENDPOINT
  \$KUBECTL apply -f examples/ && \$KUBECTL get imgcp -w
  curl -s \$ECS_ENDPOINT/_emulator/images      # the emulator's view of ECS
  make down                                   # stop it all
EOF
