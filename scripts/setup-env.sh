#!/usr/bin/env bash
# Creates (once per machine) the Python environment the project runs in, and prints its path.
#
# The environment lives outside the work tree, keyed on the hash of the pinned versions, so a fresh
# clone (CI) reuses it and only a change of pins rebuilds it. torch from PyPI is a large CUDA build;
# installing it once per machine is the point of the cache. Every call then installs this checkout
# (editable) and whatever pyproject.toml asks beyond the environment, which is quick when satisfied.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SCHEDSEARCH_CACHE:-$HOME/.cache/schedsearch}"
key="$(cat "$here/constraints.txt" "$here/scripts/setup-env.sh" | sha256sum | cut -c1-12)"
venv="${SCHEDSEARCH_VENV:-$cache/venv-$key}"
py="${PYTHON:-python3}"

if [ ! -f "$venv/.complete" ]; then
  echo "setting up the Python environment in $venv" >&2
  echo "(first run on this machine: torch from PyPI is large, allow 5-10 minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip setuptools wheel >&2
  "$venv/bin/pip" install --quiet -c "$here/constraints.txt" -e "$here[dev]" >&2
  touch "$venv/.complete"
else
  "$venv/bin/pip" install --quiet --no-build-isolation -c "$here/constraints.txt" -e "$here[dev]" >&2
fi
echo "$venv"
