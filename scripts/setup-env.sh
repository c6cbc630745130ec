#!/usr/bin/env bash
# Creates (once) the Python environment the project runs in, and prints its path.
#
# The environment lives outside the work tree, keyed on the hash of the dependency pins, so a fresh
# clone (CI) reuses it and only a change of pins rebuilds it. torch from PyPI is a large CUDA build;
# installing it once per machine is the point of the cache.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SCHEDSEARCH_CACHE:-$HOME/.cache/schedsearch}"
key="$(cat "$here/pyproject.toml" "$here/constraints.txt" "$here/scripts/setup-env.sh" | sha256sum | cut -c1-12)"
venv="${SCHEDSEARCH_VENV:-$cache/venv-py-$key}"
py="${PYTHON:-python3}"

if [ ! -f "$venv/.complete" ]; then
  echo "setting up Python environment in $venv (first run on this machine: torch is large, allow ~5-10 min)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip setuptools wheel >&2
  # Dependencies first, from the pinned constraints; the project itself is installed below.
  "$venv/bin/pip" install --quiet -c "$here/constraints.txt" \
    "$(cd "$here" && echo .)[dev]" >&2
  touch "$venv/.complete"
fi
# The project is installed editable from this work tree on every call (cheap, no dependencies), so the
# shared environment always runs the checkout that called it.
"$venv/bin/pip" install --quiet --no-deps --no-build-isolation -e "$here" >&2
echo "$venv"
