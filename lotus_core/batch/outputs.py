"""Where an input's results go and how they are written: the same files and metadata as ComfyUI's
Save Depth node (both go through ``save_depth_frame``), each file written atomically.

An image's results are complete when every file it should have exists; a video's when its frame
index (``frames.json``, written last) exists and lists files that all exist.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import torch

from ..depthmap import DepthMap, to_controlnet
from ..loading.variants import Quantity
from ..outputs.files import FILE_FORMATS, atomic_path, save_depth_frame, write_npy

VIDEO_INDEX = "frames.json"


def image_files(stem: PurePosixPath | str, quantity: Quantity, formats: tuple[str, ...], colormap: str,
                uncertainty: bool = False) -> dict[str, str]:
    """format -> file name (relative to the output folder) of one image's results; ``uncertainty``:
    an ensemble's spread also goes into ``<stem>_uncertainty.npy`` (with the npy format)."""
    what = {"control": "control", "color": f"{quantity.value}_{colormap}"}  # other formats: the quantity
    if quantity is Quantity.NORMAL:  # a normal map is the one picture of normals
        formats = tuple(dict.fromkeys("png16" if kind in ("control", "color") else kind for kind in formats))
    files = {kind: f"{stem}_{what.get(kind, quantity.value)}{FILE_FORMATS[kind]}" for kind in formats}
    if uncertainty and "npy" in formats:
        files["uncertainty"] = f"{stem}_uncertainty.npy"
    return files


def frame_stem(stem: PurePosixPath | str, frame: int) -> PurePosixPath:
    """A video frame's stem: ``clip/clip_000042`` for frame 42 of ``clip``, one folder per video."""
    stem = PurePosixPath(stem)
    return stem / f"{stem.name}_{frame:06d}"


def is_complete(output: Path, stem: PurePosixPath, files: dict[str, str], video: bool) -> bool:
    """Whether an earlier run already wrote every result of this input."""
    if not video:
        return all((output / name).is_file() for name in files.values())
    index = output / stem / VIDEO_INDEX
    if not index.is_file():
        return False
    try:
        frames = int(json.loads(index.read_text())["frames"])
    except (ValueError, KeyError, TypeError):
        return False
    kinds = [name.removeprefix(f"{stem}").split("_", 1)[-1] for name in files.values()]  # the files' endings
    return all((output / frame_stem(stem, frame).parent / f"{frame_stem(stem, frame).name}_{kind}").is_file()
               for frame in range(frames) for kind in kinds)


def write_image(output: Path, prediction: DepthMap, files: dict[str, str], colormap: str, *, frame: int = 0,
                control: torch.Tensor | None = None) -> None:
    """Frame ``frame`` of ``prediction`` into ``files`` (``image_files``), each written atomically;
    ``control`` overrides its ControlNet map (a video's: one normalisation for all frames)."""
    for kind, name in files.items():
        path = output / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "uncertainty":
            write_npy(path, prediction.uncertainty[frame, 0],
                      {"lotus_model": prediction.model,
                       "lotus_quantity": f"spread of the ensemble's {prediction.quantity.value}"})
        else:
            save_depth_frame(path, prediction, frame, kind, colormap=colormap, control=control)


def write_video(output: Path, stem: PurePosixPath, prediction: DepthMap, formats: tuple[str, ...], colormap: str,
                frame_rate: float | None) -> None:
    """Every frame's files, then the video's frame index, which marks the video complete."""
    depth = prediction.quantity is not Quantity.NORMAL
    control = to_controlnet(prediction, per_image=False) if depth else None  # steady: one range for all
    names = []
    for frame in range(prediction.values.shape[0]):
        files = image_files(frame_stem(stem, frame), prediction.quantity, formats, colormap)
        write_image(output, prediction, files, colormap, frame=frame, control=control)
        names.extend(files.values())
    index = output / stem / VIDEO_INDEX
    with atomic_path(index) as temporary:
        temporary.write_text(json.dumps({"frames": prediction.values.shape[0], "frame_rate": frame_rate,
                                         "files": names}, indent=1))
