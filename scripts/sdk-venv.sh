#!/usr/bin/env bash
# Creates, or reuses, the virtualenv with the official Alibaba Cloud Python SDK that
# tests/sdk/test_official_sdk.py runs with, and prints its path on stdout.
#
# The venv lives outside the clone, keyed by a hash of tests/sdk/requirements.txt, so it is
# built once per machine and rebuilt only when the pins change:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/ecs-image-operator/sdk-venv-<hash>
# Set PYTHON to choose the interpreter (default python3, 3.9 or newer).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$root/tests/sdk/requirements.txt"
python="${PYTHON:-python3}"

hash="$(sha256sum "$requirements" | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ecs-image-operator"
venv="$cache/sdk-venv-$hash"
mkdir -p "$cache"

# Two concurrent `make test` runs must not build the same venv at once.
exec 9>"$cache/sdk-venv.lock"
flock 9

# A venv is only usable once fully installed; the marker is written last, so an interrupted
# build is thrown away and redone rather than half-used.
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    echo "sdk-venv: creating $venv" >&2
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --requirement "$requirements" >&2
    touch "$venv/.complete"
fi

echo "$venv"
