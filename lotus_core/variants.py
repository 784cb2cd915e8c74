"""What each published Lotus checkpoint predicts, and how to tell from a file or folder name.

The output quantity cannot be read from the weights (depth, disparity and normal checkpoints share
one architecture), so it comes from this table of known releases, from an explicit override, or
not at all: guessing would silently invert a depth map.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import LotusError


class Quantity(str, enum.Enum):
    """What a checkpoint's decoded output means."""

    DEPTH = "depth"  # affine-invariant depth in [0, 1], 0 = near (v1.x depth checkpoints)
    DISPARITY = "disparity"  # affine-invariant disparity in [0, 1], 1 = near (*-disparity)
    NORMAL = "normal"  # surface normals, RGB = (n + 1) / 2

    @property
    def near_is_high(self) -> bool:
        """True when larger values mean closer to the camera."""
        if self is Quantity.NORMAL:
            raise LotusError("normal maps have no near/far polarity; use a depth or disparity checkpoint")
        return self is Quantity.DISPARITY


@dataclass(frozen=True)
class KnownCheckpoint:
    """A published Lotus release (lotus_reference.md §2)."""

    name: str  # the Hugging Face repo name under jingheya/
    quantity: Quantity
    generative: bool  # Lotus-G (image latent + noise, 8 channels) vs Lotus-D (4 channels)
    files: tuple[str, ...] = ()  # single-file repackagings for ComfyUI
    sha256_prefixes: tuple[str, ...] = ()  # of those files, where published

    @property
    def repo(self) -> str:
        return f"jingheya/{self.name}"


D, G = False, True
KNOWN_CHECKPOINTS: tuple[KnownCheckpoint, ...] = (
    KnownCheckpoint(
        "lotus-depth-g-v1-0", Quantity.DEPTH, G,
        ("lotus-depth-g-v1-0.safetensors", "lotus-depth-g-v1-0-fp16.safetensors"),
        ("41a8d50a", "e8454c55"),
    ),
    KnownCheckpoint("lotus-depth-d-v1-0", Quantity.DEPTH, D),
    KnownCheckpoint(
        "lotus-depth-d-v1-1", Quantity.DEPTH, D,
        ("lotus-depth-d-v-1-1-fp16.safetensors", "lotus-depth-d-v1-1.safetensors"),
        ("dc139421",),
    ),
    KnownCheckpoint("lotus-depth-g-v2-0-disparity", Quantity.DISPARITY, G),
    KnownCheckpoint("lotus-depth-g-v2-1-disparity", Quantity.DISPARITY, G),
    KnownCheckpoint("lotus-depth-d-v2-0-disparity", Quantity.DISPARITY, D),
    KnownCheckpoint(
        "lotus-normal-g-v1-0", Quantity.NORMAL, G,
        ("lotus-normal-g-v1-0.safetensors", "lotus-normal-g-v1-0-fp16.safetensors"),
    ),
    KnownCheckpoint(
        "lotus-normal-d-v1-0", Quantity.NORMAL, D,
        ("lotus-normal-d-v1-0.safetensors", "lotus-normal-d-v1-0-fp16.safetensors"),
    ),
    KnownCheckpoint("lotus-normal-g-v1-1", Quantity.NORMAL, G),
    KnownCheckpoint("lotus-normal-d-v1-1", Quantity.NORMAL, D),
)


def identify_by_name(path: Path) -> KnownCheckpoint | None:
    """The known release that a file or folder path names, if any.

    Matches a ComfyUI single-file name, a folder named like the repo, or a Hugging Face cache
    folder (``models--jingheya--<name>``) anywhere in the path.
    """
    for known in KNOWN_CHECKPOINTS:
        if path.name.lower() in known.files:
            return known
    for part in (p.lower() for p in reversed(path.parts)):
        stem = part.removesuffix(".safetensors").removesuffix("-fp16").removesuffix("_fp16")
        for known in KNOWN_CHECKPOINTS:
            if stem == known.name or stem.endswith("--" + known.name):
                return known
    return None


def identify_by_hash(path: Path) -> KnownCheckpoint | None:
    """The known release whose published sha256 this file has (for renamed files)."""
    prefixes = {p: k for k in KNOWN_CHECKPOINTS for p in k.sha256_prefixes}
    if not prefixes or not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    hex_digest = digest.hexdigest()
    return next((k for p, k in prefixes.items() if hex_digest.startswith(p)), None)
