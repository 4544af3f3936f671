#!/usr/bin/env bash
# cargo fmt --check and cargo clippy -D warnings, when this toolchain has them (a missing component
# is reported plainly and skipped: no rustup component can be downloaded here), then cargo deny
# (licenses, bans, sources, and advisories when the advisory database can be fetched).
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

# cargo-deny is built from crates.io once per version into a cache outside the clone.
cargo_deny_version=0.20.2
cargo_deny_root="${XDG_CACHE_HOME:-$HOME/.cache}/ecs-image-operator/cargo-deny-$cargo_deny_version"
cargo_deny="$cargo_deny_root/bin/cargo-deny"
if [ ! -x "$cargo_deny" ]; then
  echo "lint: building cargo-deny $cargo_deny_version into $cargo_deny_root (first time only, a few minutes)" >&2
  cargo install --locked --quiet cargo-deny --version "$cargo_deny_version" --root "$cargo_deny_root"
fi

# The advisory database is a git repository on GitHub, which this machine and CI cannot reach.
# Without it the advisories check is skipped, loudly; every other check still runs and fails the
# build. See deny.toml.
checks=(licenses bans sources)
fetch_log=$(mktemp)
trap 'rm -f "$fetch_log"' EXIT
fetch_status=0
timeout 120 "$cargo_deny" --log-level error fetch db >"$fetch_log" 2>&1 || fetch_status=$?
if [ "$fetch_status" -eq 0 ]; then
  checks=(advisories "${checks[@]}")
elif [ "$fetch_status" -eq 124 ] ||
  grep -qiE "could not resolve host|unable to access|timed out|connection refused|network is unreachable" "$fetch_log"; then
  echo "lint: cargo deny: the advisory database (RustSec, on GitHub) cannot be reached from here;" >&2
  echo "lint: cargo deny: SKIPPING the advisories check. licenses, bans and sources are still checked." >&2
  sed -n '1,5s/^/lint: cargo deny fetch: /p' "$fetch_log" >&2
else
  echo "lint: cargo deny: fetching the advisory database failed (not for lack of network):" >&2
  cat "$fetch_log" >&2
  exit 1
fi
"$cargo_deny" --locked check --hide-inclusion-graph "${checks[@]}"
