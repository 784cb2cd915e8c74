"""The Lotus-2 release files (Hugging Face ``jingheya/Lotus-2``), known by name and fetched like Lotus 1.

Each task has three files at the repository's root: the core predictor LoRA, the detail sharpener
LoRA and the local continuity module. The base model (FLUX.1-dev) is the user's and is never
downloaded here. Downloads use the sizes and sha256 the Hub reports (see ``loading/hub.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import check_choice
from ..loading.hub import fetch
from ..loading.variants import HubFile, KnownCheckpoint, Quantity
from ..progress import ProgressCallback

REPO_NAME = "Lotus-2"  # under jingheya/, as the Lotus 1 releases
TASKS = ("depth", "normal")
# The output of a depth LoRA is disparity-like (near = high): the official colouring reverses its map
# and its evaluation aligns it as disparity.
TASK_QUANTITY = {"depth": Quantity.DISPARITY, "normal": Quantity.NORMAL}
# The official LoRA ranks (infer.py): the one property of the weights that tells the two tasks apart.
TASK_LORA_RANK = {"depth": 128, "normal": 256}
# The listing gives 1.43 GB for each core predictor; the sharpeners are assumed the same size. Only a
# fallback: the disk-space check uses the size the Hub reports.
LORA_SIZE = {"depth": 1_430_000_000, "normal": 1_430_000_000}
LCM_SIZE = 37_000  # two 3x3 convolutions 16 -> 32 -> 16 channels in fp32


@dataclass(frozen=True)
class Lotus2Files:
    """The three local files of one task."""

    core_predictor: Path
    detail_sharpener: Path
    lcm: Path


def file_names(task: str) -> tuple[str, str, str]:
    """The release's names for ``task``'s core predictor, detail sharpener and LCM files."""
    check_choice("task", task, TASKS)
    return (f"lotus-2_core_predictor_{task}.safetensors", f"lotus-2_detail_sharpener_{task}.safetensors",
            f"lotus-2_lcm_{task}.safetensors")


def release(task: str) -> KnownCheckpoint:
    """The download entry of ``task``'s three files (for ``lotus_core.fetch``)."""
    core, sharpener, lcm = file_names(task)
    files = (HubFile(lcm, LCM_SIZE), HubFile(sharpener, LORA_SIZE[task]), HubFile(core, LORA_SIZE[task]))
    # KnownCheckpoint's generative flag is a Lotus 1 notion (G or D): meaningless here, left False
    return KnownCheckpoint(REPO_NAME, TASK_QUANTITY[task], False, files)


def fetch_lotus2(task: str, *, local_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 progress: ProgressCallback | None = None) -> Lotus2Files:
    """``task``'s three files on this machine, downloaded first if any is missing (offline when complete)."""
    folder = fetch(release(task), local_dir=local_dir, cache_dir=cache_dir, progress=progress)
    return files_in(folder, task)


def files_in(folder: str | Path, task: str) -> Lotus2Files:
    """``task``'s three files by their release names in ``folder`` (not checked for existence here)."""
    core, sharpener, lcm = file_names(task)
    folder = Path(folder)
    return Lotus2Files(folder / core, folder / sharpener, folder / lcm)
