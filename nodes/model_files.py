"""Finding Lotus checkpoints and SD VAEs in ComfyUI's model folders."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import folder_paths

from ..lotus_core.checkpoint import read_safetensors_keys

LOTUS_FOLDER = "lotus"  # models/lotus, plus any `lotus:` entry in extra_model_paths.yaml
CHECKPOINT_FOLDERS = (LOTUS_FOLDER, "diffusion_models")
FROM_CHECKPOINT_FOLDER = "(from checkpoint folder)"
TASK_SWITCH_KEYS = ("class_embedding.linear_1.weight", "label_emb.0.0.weight")
CONV_IN_KEYS = ("conv_in.weight", "input_blocks.0.0.weight")  # diffusers, LDM names
FOLDER_SEARCH_DEPTH = 4  # deep enough for a Hugging Face cache: models--org--name/snapshots/<hash>/


def register_lotus_folder() -> None:
    """Add models/lotus to ComfyUI's model folders (kept if extra_model_paths.yaml already made it)."""
    path = os.path.join(folder_paths.models_dir, LOTUS_FOLDER)
    if LOTUS_FOLDER in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(LOTUS_FOLDER, path)
    else:
        folder_paths.folder_names_and_paths[LOTUS_FOLDER] = ([path], {".safetensors"})


@lru_cache(maxsize=4096)
def _is_lotus_file(path: str, mtime_ns: int, size: int) -> bool:
    """Whether a safetensors file holds a Lotus UNet (cached per file version: headers only)."""
    keys = read_safetensors_keys(Path(path)) or []
    return any(k.endswith(TASK_SWITCH_KEYS) for k in keys) and any(k.endswith(CONV_IN_KEYS) for k in keys)


def _diffusers_folders(root: Path) -> list[str]:
    found = []
    for depth in range(1, FOLDER_SEARCH_DEPTH + 1):
        for index in root.glob("*/" * depth + "model_index.json"):
            if (index.parent / "unet").is_dir():
                found.append(index.parent.relative_to(root).as_posix() + "/")
    return found


def checkpoint_choices() -> list[str]:
    """Lotus single files and diffusers folders in the lotus and diffusion_models folders."""
    choices: list[str] = []
    for folder in CHECKPOINT_FOLDERS:
        roots = [Path(p) for p in folder_paths.get_folder_paths(folder) if os.path.isdir(p)]
        folders = [f for root in roots for f in _diffusers_folders(root)]
        for name in folder_paths.get_filename_list(folder):
            if name.endswith(".safetensors") and not any(name.startswith(f) for f in folders):
                path = folder_paths.get_full_path(folder, name)
                stat = os.stat(path)
                if _is_lotus_file(path, stat.st_mtime_ns, stat.st_size):
                    choices.append(name)
        choices.extend(folders)
    return sorted(dict.fromkeys(choices))


def resolve_checkpoint(name: str) -> Path:
    for folder in CHECKPOINT_FOLDERS:
        for root in folder_paths.get_folder_paths(folder):
            candidate = Path(root) / name
            if candidate.exists():
                return candidate
    raise FileNotFoundError(f"Lotus checkpoint {name!r} is not in models/lotus or models/diffusion_models")


def vae_choices() -> list[str]:
    return [FROM_CHECKPOINT_FOLDER] + [n for n in folder_paths.get_filename_list("vae") if n.endswith(".safetensors")]
