"""Finding Lotus checkpoints and SD VAEs in ComfyUI's model folders."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import folder_paths

from ..lotus_core import (
    KNOWN_CHECKPOINTS,
    KnownCheckpoint,
    ProgressCallback,
    fetch,
    holds_lotus_unet,
    known_checkpoint,
    missing_files,
)

LOTUS_FOLDER = "lotus"  # models/lotus, plus any `lotus:` entry in extra_model_paths.yaml
CHECKPOINT_FOLDERS = (LOTUS_FOLDER, "diffusion_models")
FROM_CHECKPOINT_FOLDER = "(from checkpoint folder)"
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
    """Whether a safetensors file holds a Lotus UNet, cached per file version (the list is rebuilt often)."""
    return holds_lotus_unet(Path(path))


def _diffusers_folders(root: Path) -> list[str]:
    found = []
    for depth in range(1, FOLDER_SEARCH_DEPTH + 1):
        for index in root.glob("*/" * depth + "model_index.json"):
            if (index.parent / "unet").is_dir():
                found.append(index.parent.relative_to(root).as_posix() + "/")
    return found


def checkpoint_choices() -> list[str]:
    """What the loader offers: the checkpoints on disk, and every known release as "<name>/".

    A release that is not on disk yet is downloaded on first use into models/lotus/<name>/, so its
    value is the one the folder will have: saved workflows stay valid before and after.
    """
    return sorted(dict.fromkeys(checkpoints_on_disk() + [f"{k.name}/" for k in KNOWN_CHECKPOINTS if k.download]))


def checkpoints_on_disk() -> list[str]:
    """Lotus single files and diffusers folders in the lotus and diffusion_models folders."""
    choices: list[str] = []
    for folder in CHECKPOINT_FOLDERS:
        roots = [Path(p) for p in folder_paths.get_folder_paths(folder) if os.path.isdir(p)]
        folders = [f for root in roots for f in _diffusers_folders(root)]
        # A release folder that is still downloading (no model_index.json yet) is offered as "<name>/":
        # its unet/ file is not listed on its own.
        inside = folders + [f"{k.name}/" for k in KNOWN_CHECKPOINTS]
        for name in folder_paths.get_filename_list(folder):
            if name.endswith(".safetensors") and not any(name.startswith(f) for f in inside):
                path = folder_paths.get_full_path(folder, name)
                stat = os.stat(path)
                if _is_lotus_file(path, stat.st_mtime_ns, stat.st_size):
                    choices.append(name)
        choices.extend(folders)
    return sorted(dict.fromkeys(choices))


def _find(name: str) -> Path | None:
    for folder in CHECKPOINT_FOLDERS:
        for root in folder_paths.get_folder_paths(folder):
            candidate = Path(root) / name
            if candidate.exists():
                return candidate
    return None


def resolve_checkpoint(name: str) -> Path:
    found = _find(name)
    if found is None:
        raise FileNotFoundError(f"Lotus checkpoint {name!r} is not in models/lotus or models/diffusion_models")
    return found


def release_of(name: str) -> KnownCheckpoint | None:
    """The known release a "<name>/" choice stands for (downloadable), else None."""
    known = known_checkpoint(name) if name.endswith("/") else None
    return known if known is not None and known.download else None


def download_folder(known: KnownCheckpoint) -> Path:
    """Where a release is downloaded: models/lotus/<name>, or the first `lotus:` folder of
    extra_model_paths.yaml (it comes first in ComfyUI's list, so users can put models on another disk)."""
    return Path(folder_paths.get_folder_paths(LOTUS_FOLDER)[0]) / known.name


def checkpoint_path(name: str, progress: ProgressCallback | None = None) -> Path:
    """The checkpoint's path; a known release missing from disk (or incomplete) is downloaded first."""
    known = release_of(name)
    found = _find(name)
    if known is None or (found is not None and not missing_files(known, found)):
        return resolve_checkpoint(name)
    return fetch(known, local_dir=found if found is not None else download_folder(known), progress=progress)


def vae_choices() -> list[str]:
    return [FROM_CHECKPOINT_FOLDER] + [n for n in folder_paths.get_filename_list("vae") if n.endswith(".safetensors")]
