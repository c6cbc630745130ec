#!/usr/bin/env bash
# Sets up the Python environment this checkout runs in, and prints its path (<checkout>/.venv).
#
# Two layers, so that torch (a large CUDA build from PyPI) is installed once per machine and yet
# every checkout runs its own code:
#   - a shared environment with the dependencies only, under ~/.cache/schedsearch, keyed on the
#     pinned versions and the dependency lists of pyproject.toml: a fresh clone (CI) reuses it, and
#     only a change of dependencies builds a new one;
#   - <checkout>/.venv, a small environment that sees the shared one's packages (a .pth file) and
#     holds this checkout installed in editable mode. Two checkouts never take each other's place.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SCHEDSEARCH_CACHE:-$HOME/.cache/schedsearch}"
py="${PYTHON:-python3}"

deps_key() {
  "$py" - "$here/pyproject.toml" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(project["requires-python"], project["dependencies"], project.get("optional-dependencies"))
EOF
  cat "$here/constraints.txt"
}
key="$(deps_key | sha256sum | cut -c1-12)"
shared="${SCHEDSEARCH_VENV:-$cache/deps-$key}"

if [ ! -f "$shared/.complete" ]; then
  echo "setting up the shared Python environment in $shared" >&2
  echo "(first run on this machine: torch from PyPI is large, allow 5-10 minutes)" >&2
  rm -rf "$shared"
  mkdir -p "$cache"
  "$py" -m venv "$shared"
  "$shared/bin/pip" install --quiet --upgrade pip setuptools wheel >&2
  # The project's dependencies, resolved from its own metadata; the project itself goes to .venv.
  "$shared/bin/pip" install --quiet -c "$here/constraints.txt" "$here[dev]" >&2
  "$shared/bin/pip" uninstall --quiet --yes schedsearch >&2
  touch "$shared/.complete"
fi

venv="$here/.venv"
link="$venv/shared-env"
if [ ! -x "$venv/bin/python" ] || [ "$(readlink "$link" 2>/dev/null)" != "$shared" ]; then
  rm -rf "$venv"
  "$shared/bin/python" -m venv --without-pip "$venv"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  "$shared/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))' \
    > "$site/_schedsearch_shared_env.pth"
  ln -s "$shared" "$link"
fi
# Cheap when nothing changed; picks up new packages and console scripts when something did.
# setuptools is chatty about editable installs: its output is shown only if the install fails.
if ! "$shared/bin/pip" --python "$venv/bin/python" install --quiet --no-deps \
    --no-build-isolation -e "$here" > "$venv/install.log" 2>&1; then
  cat "$venv/install.log" >&2
  exit 1
fi
echo "$venv"
