#!/usr/bin/env bash
# `make up`: starts, in the background, the real kube-apiserver (CRDs applied), the ECS emulator
# and the operator, all on 127.0.0.1, and writes .dev/env for developers, tests and scripts.
# `make down` (scripts/down.sh) stops them. Logs are in .dev/*.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dev="$root/.dev"
cd "$root"

if [ -f "$dev/env" ]; then
  echo "up: already running (see .dev/env); run 'make down' first" >&2
  exit 1
fi
mkdir -p "$dev"
trap 'echo "up: failed; stopping what was started" >&2; "$root/scripts/down.sh" >/dev/null 2>&1 || true' ERR

harness_dir=$("$root/scripts/build-harness.sh")
cargo build --release --locked --quiet
bin="$root/target/release/ecs-image-operator"

# wait_line FILE PATTERN SECONDS PID: wait until FILE has a line matching PATTERN, or fail early.
wait_line() {
  local file=$1 pattern=$2 seconds=$3 pid=$4
  for _ in $(seq $((seconds * 10))); do
    if grep -q "$pattern" "$file" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "up: process $pid exited; last lines of its log:" >&2
      tail -n 20 "${file%.out}.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  echo "up: timed out waiting for '$pattern' in $file" >&2
  return 1
}

rm -rf "$dev/apiserver"
setsid "$harness_dir/kube-harness" --kubeconfig="$dev/kubeconfig" --data-dir="$dev/apiserver" \
  </dev/null >"$dev/apiserver.out" 2>"$dev/apiserver.log" &
echo $! >"$dev/apiserver.pid"
wait_line "$dev/apiserver.out" '^ready$' 180 "$(cat "$dev/apiserver.pid")"
"$harness_dir/kubectl" --kubeconfig="$dev/kubeconfig" apply --server-side -f "$root/crds/" >/dev/null
"$harness_dir/kubectl" --kubeconfig="$dev/kubeconfig" wait --for=condition=Established --timeout=60s \
  -f "$root/crds/" >/dev/null

{
  echo "KUBECONFIG=$dev/kubeconfig"
  echo "KUBECTL=$harness_dir/kubectl"
} >"$dev/env.partial"

# shellcheck disable=SC2086 # EMULATOR_ARGS is a list of flags on purpose
setsid "$bin" emulator --listen 127.0.0.1:0 ${EMULATOR_ARGS:-} \
  </dev/null >"$dev/emulator.out" 2>"$dev/emulator.log" &
echo $! >"$dev/emulator.pid"
wait_line "$dev/emulator.out" 'listening on' 30 "$(cat "$dev/emulator.pid")"
ecs_endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dev/emulator.out" | head -n1)
echo "ECS_ENDPOINT=$ecs_endpoint" >>"$dev/env.partial"

# The operator uses the emulator's default access key. Leader election is on (the default): the
# operator takes the Lease default/ecs-image-operator at once on this fresh apiserver, and a second
# operator started by hand against it waits as a standby.
KUBECONFIG="$dev/kubeconfig" ECS_ENDPOINT="$ecs_endpoint" \
  ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret \
  setsid "$bin" run --metrics-addr 127.0.0.1:0 ${OPERATOR_ARGS:-} \
  </dev/null >"$dev/operator.out" 2>"$dev/operator.log" &
echo $! >"$dev/operator.pid"
wait_line "$dev/operator.out" 'metrics on' 30 "$(cat "$dev/operator.pid")"

mv "$dev/env.partial" "$dev/env"
trap - ERR
echo "up: running; source .dev/env (KUBECONFIG, KUBECTL, ECS_ENDPOINT). Stop with 'make down'."
cat "$dev/env"
