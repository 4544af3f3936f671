# The README's two commands are `make demo` and `make test`; CI runs `make test` via .ci/run.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: test demo up down crds lint harness sdk-test chaos

## test: everything — lint, unit tests, client/emulator tests, e2e on the real apiserver, official
## SDK, and the short chaos run.
test: lint
	@echo "== building the test kube-apiserver (cached after the first run)"
	export KUBE_HARNESS_DIR="$$(scripts/build-harness.sh)"; \
	echo "== cargo test"; \
	cargo test --locked --all-targets -- --skip chaos --exact
	$(MAKE) --no-print-directory sdk-test
	$(MAKE) --no-print-directory chaos

## chaos: copies, faults, SIGKILLs and deletes, then the promises checked from the emulator's
## state; ends with the `chaos: …` line. LONG=1 runs the long plan.
chaos:
	@echo "== chaos ($(if $(LONG),long,short) run)"
	export KUBE_HARNESS_DIR="$$(scripts/build-harness.sh)"; \
	CHAOS_LONG=$(if $(LONG),1,) cargo test --locked --test chaos -- --exact chaos --nocapture

## sdk-test: the official Alibaba Cloud Python SDK against our emulator.
sdk-test:
	@echo "== official Alibaba Cloud Python SDK against the emulator"
	cargo build --locked --quiet
	venv="$$(scripts/sdk-venv.sh)"; \
	ECS_IMAGE_OPERATOR_BIN="$(CURDIR)/target/debug/ecs-image-operator" PYTHONDONTWRITEBYTECODE=1 \
	  "$$venv/bin/python" -m pytest -p no:cacheprovider -q tests/sdk

lint:
	scripts/lint.sh

harness:
	scripts/build-harness.sh

## crds: regenerate crds/ from the Rust types.
crds:
	cargo run --locked --quiet -- crd > crds/imageops.dev.yaml

up:
	scripts/up.sh

down:
	scripts/down.sh

demo:
	scripts/demo.sh
