# The README's two commands are `make demo` and `make test`; CI runs `make test` via .ci/run.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: test demo up down crds lint harness sdk-test chaos chart-test manifests image image-test bench

## test: everything — lint, chart/manifests/Argo CD checks, unit tests, client/emulator tests, e2e on
## the real apiserver (the chart's among them), official SDK, the container image, and the short chaos run.
test: lint chart-test
	@echo "== building the test kube-apiserver (cached after the first run)"
	export KUBE_HARNESS_DIR="$$(scripts/build-harness.sh)"; \
	echo "== cargo test"; \
	cargo test --locked --all-targets -- --skip chaos --exact
	$(MAKE) --no-print-directory sdk-test
	$(MAKE) --no-print-directory image-test
	$(MAKE) --no-print-directory chaos

## chaos: copies, faults, SIGKILLs and deletes, then the promises checked from the emulator's
## state; ends with the `chaos: …` line. LONG=1 runs the long plan.
chaos:
	@echo "== chaos ($(if $(LONG),long,short) run)"
	export KUBE_HARNESS_DIR="$$(scripts/build-harness.sh)"; \
	CHAOS_LONG=$(if $(LONG),1,) cargo test --locked --test chaos -- --exact chaos --nocapture

## bench: the performance benchmark (BENCHMARKS.md): the release build on the real apiserver and
## the emulator, the per-object baseline poller in the same run; prints a table and writes
## target/bench/latest.json. Sizes and timings: N= objects (200), R= regions (4), COPY= copy
## seconds (25), POLL= operator poll interval and baseline tick (10s), RESYNC= drift-check interval
## (60s), REST= time held at rest (120s), QPS= ECS calls per second per region (10), CONCURRENCY=
## (16). `make bench N=10000` is the big run.
bench:
	cargo build --locked --release
	export KUBE_HARNESS_DIR="$$(scripts/build-harness.sh)"; \
	BENCH_OPERATOR_BIN="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/release/ecs-image-operator" \
	BENCH_OBJECTS="$(N)" BENCH_REGIONS="$(R)" BENCH_COPY_SECONDS="$(COPY)" \
	BENCH_POLL_INTERVAL="$(POLL)" BENCH_RESYNC_INTERVAL="$(RESYNC)" BENCH_AT_REST="$(REST)" \
	BENCH_REGION_QPS="$(QPS)" BENCH_CONCURRENCY="$(CONCURRENCY)" \
	cargo test --locked --test bench -- --ignored --exact bench --nocapture

## sdk-test: the official Alibaba Cloud Python SDK against our emulator.
sdk-test:
	@echo "== official Alibaba Cloud Python SDK against the emulator"
	cargo build --locked --quiet
	venv="$$(scripts/sdk-venv.sh)"; \
	ECS_IMAGE_OPERATOR_BIN="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/ecs-image-operator" PYTHONDONTWRITEBYTECODE=1 \
	  "$$venv/bin/python" -m pytest -p no:cacheprovider -q tests/sdk

lint:
	scripts/lint.sh

harness:
	scripts/build-harness.sh

## crds: regenerate crds/ (and the chart's copy) from the Rust types.
crds:
	cargo run --locked --quiet -- crd > crds/imageops.dev.yaml
	cp crds/imageops.dev.yaml charts/ecs-image-operator/files/crds.yaml

## chart-test: helm lint/template/unittest, deploy/ freshness, Argo CD health checks (no cluster;
## tests/chart.rs installs the chart on the real apiserver within `cargo test`).
chart-test:
	@echo "== chart, manifests and Argo CD health checks"
	scripts/chart-check.sh

## manifests: regenerate deploy/ from the chart with default values.
manifests:
	scripts/manifests.sh

## image: the container image from the Dockerfile, built with buildah (no Docker) into
## target/image/ecs-image-operator.oci.tar.
image:
	scripts/image.sh build

## image-test: make image, then run it with runc against the real apiserver and the emulator.
image-test:
	@echo "== container image (buildah, umoci, runc)"
	scripts/image.sh test

up:
	scripts/up.sh

down:
	scripts/down.sh

demo:
	scripts/demo.sh
