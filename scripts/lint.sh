#!/usr/bin/env bash
# cargo fmt --check and cargo clippy -D warnings, when this toolchain has them. A missing component
# is reported plainly and skipped (no rustup component can be downloaded here).
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "lint: cargo fmt is not installed for this toolchain; skipping the format check" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --all-targets --locked -- -D warnings
else
  echo "lint: cargo clippy is not installed for this toolchain; skipping clippy" >&2
fi
