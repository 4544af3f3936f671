#!/usr/bin/env bash
# `make chart-test`, the checks that need no cluster: helm lint --strict and helm template with
# default and non-default values, the chart's unit tests (helm-unittest), the chart's CRD copy
# against crds/, deploy/ against the chart, and every Argo CD health check run as Argo CD runs it.
# tests/chart.rs does the rest on the real apiserver.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
chart=charts/ecs-image-operator
helm=$(scripts/tool.sh helm)
unittest=$(scripts/tool.sh helm-unittest)
health_check=$(scripts/tool.sh argocd-health-check)

# The values a real installation changes, all at once.
non_default=(
  --set replicaCount=2 --set watchNamespace=images
  --set-string 'serviceAccount.annotations.pod-identity\.alibabacloud\.com/role-name=ecs-image-operator'
  --set image.repository=registry.example/ops/ecs-image-operator
  --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  --set credentials.rrsa.enabled=true
  --set credentials.rrsa.roleArn=acs:ram::1234567890:role/ecs-image-operator
  --set credentials.rrsa.oidcProviderArn=acs:ram::1234567890:oidc-provider/ack-rrsa-c123
  --set podDisruptionBudget.enabled=true --set logFormat=text
)

echo "== helm lint --strict (default and non-default values)"
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" "${non_default[@]}"

echo "== helm template rejects a value the chart does not know"
if out=$("$helm" template t "$chart" --set replicas=2 2>&1); then
  echo "chart-check: values.schema.json accepted an unknown key 'replicas'" >&2
  exit 1
fi
grep -q "additional properties 'replicas' not allowed" <<<"$out" || {
  echo "chart-check: unexpected error for an unknown key: $out" >&2
  exit 1
}

echo "== helm template with non-default values"
rendered=$("$helm" template imageops "$chart" --namespace ops "${non_default[@]}")
for expected in 'kind: Role$' 'replicas: 2' 'name: LEADER_ELECT' '@sha256:0123' 'pod-identity.alibabacloud.com/role-name' \
  'kind: PodDisruptionBudget' 'audience: sts.aliyuncs.com'; do
  grep -q -- "$expected" <<<"$rendered" || {
    echo "chart-check: non-default rendering lacks '$expected'" >&2
    exit 1
  }
done
if grep -q 'kind: ClusterRole$' <<<"$rendered"; then
  echo "chart-check: watchNamespace still renders a ClusterRole" >&2
  exit 1
fi

echo "== helm-unittest"
"$unittest" "$chart"

echo "== the chart's CRDs are crds/ (make crds writes both)"
cmp crds/imageops.dev.yaml "$chart/files/crds.yaml" || {
  echo "chart-check: $chart/files/crds.yaml differs from crds/imageops.dev.yaml: run 'make crds'" >&2
  exit 1
}

echo "== deploy/ is what the chart renders"
scripts/manifests.sh --check

echo "== Argo CD health checks (default libraries and useOpenLibs)"
"$health_check" -crds crds/imageops.dev.yaml deploy/argocd

echo "== the README's argocd-cm snippet is the health check of every kind"
for dir in deploy/argocd/imageops.dev/*/; do
  kind=$(basename "$dir")
  # awk reads to the end: leaving early would kill sed with SIGPIPE, which pipefail reports.
  snippet=$(sed -n '/<!-- argocd-cm: begin -->/,/<!-- argocd-cm: end -->/p' README.md |
    awk -v key="  resource.customizations.health.imageops.dev_$kind: |" '
      $0 == key { on = 1; next }
      on && (/^  resource\.customizations/ || /^```$/) { on = 0 }
      on { sub(/^      /, ""); print }')
  if [ "$snippet" != "$(cat "$dir/health.lua")" ]; then
    echo "chart-check: README's argocd-cm snippet for $kind differs from $dir/health.lua" >&2
    diff <(echo "$snippet") "$dir/health.lua" >&2 || true
    exit 1
  fi
done
