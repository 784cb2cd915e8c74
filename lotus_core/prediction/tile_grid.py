"""Overlapping tiles over an image and smooth blend weights that sum to one at every pixel.

Used twice: by the high-resolution prediction (tiles of the image, ``quality/highres.py``) and by the VAE
on images too large for memory (tiles of the latent, ``vae_tiling.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import LotusError
from .images import MIN_EDGE


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int

    @property
    def region(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]  # evenly spread, ends flush


def tile_layout(height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """Tiles of at most ``tile_size`` px covering the image, neighbours overlapping by >= ``overlap`` px."""
    if not isinstance(tile_size, int) or tile_size < MIN_EDGE:
        raise LotusError(f"tile_size={tile_size!r} must be an integer >= {MIN_EDGE}")
    if not isinstance(overlap, int) or not 0 <= overlap < tile_size // 2:
        raise LotusError(f"overlap={overlap!r} must be an integer in [0, tile_size / 2) = [0, {tile_size // 2})")
    return [Tile(top, left, min(tile_size, height), min(tile_size, width))
            for top in _starts(height, tile_size, overlap) for left in _starts(width, tile_size, overlap)]


def _ramp(length: int, ramp_start: bool, ramp_end: bool, overlap: int) -> torch.Tensor:
    """1-D weights: a smooth rise over ``overlap`` px at each inner edge, flat elsewhere, never 0."""
    position = torch.arange(length, dtype=torch.float32)
    weight = torch.ones(length)
    if overlap > 0:
        for active, distance in ((ramp_start, position), (ramp_end, length - 1 - position)):
            if active:
                t = ((distance + 0.5) / overlap).clamp(0, 1)
                weight = weight * (t * t * (3 - 2 * t)).clamp_min(1e-3)  # smoothstep
    return weight


def blend_weights(tiles: list[Tile], height: int, width: int, overlap: int) -> list[torch.Tensor]:
    """Each tile's blend weight [h, w]: smooth ramps over the overlaps, summing to one at every pixel."""
    raw = []
    for tile in tiles:
        rows = _ramp(tile.height, tile.top > 0, tile.top + tile.height < height, overlap)
        cols = _ramp(tile.width, tile.left > 0, tile.left + tile.width < width, overlap)
        raw.append(rows[:, None] * cols[None, :])
    total = torch.zeros(height, width)
    for tile, weight in zip(tiles, raw):
        total[tile.region] += weight
    return [weight / total[tile.region] for tile, weight in zip(tiles, raw)]
