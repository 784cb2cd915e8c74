"""Seamless high resolution: a global prediction refined by overlapping native-resolution tiles.

The global pass (at the processing resolution) fixes the scene's layout and depth range; each tile,
predicted at the image's own resolution, brings the detail. Because Lotus depth is affine-invariant,
each tile is first mapped onto the global prediction by least-squares scale and shift over its area;
tiles are then blended with smooth weights that sum to one at every pixel, so no seam shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .alignment import align_to, into_unit_range
from .errors import LotusError
from .imaging import MIN_EDGE, check_images
from .inference import DEFAULT_PROCESSING_RESOLUTION, predict
from .model import LotusModel
from .outputs import LotusPrediction
from .variants import Quantity

DEFAULT_TILE_SIZE = 768
DEFAULT_OVERLAP = 128


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


def blend_tiles(reference: torch.Tensor, tiles: list[Tile], tile_values: Iterable[torch.Tensor], overlap: int,
                align: bool = True) -> torch.Tensor:
    """Blend per-tile maps [B, C, h, w] into one [B, C, H, W] the size of ``reference``.

    With ``align``, each tile is first mapped onto ``reference`` (the global prediction) by its
    least-squares scale and shift over the tile's area. ``tile_values`` may be a generator, so only
    one tile needs to exist at a time.
    """
    height, width = reference.shape[-2:]
    result = torch.zeros_like(reference)
    for tile, weight, values in zip(tiles, blend_weights(tiles, height, width, overlap), tile_values, strict=True):
        area = (..., *tile.region)
        values = values.to(reference)
        result[area] += weight * (align_to(values, reference[area]) if align else values)
    return result


def predict_tiled(
    model: LotusModel,
    images: torch.Tensor,
    *,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    processing_resolution: int = DEFAULT_PROCESSING_RESOLUTION,
    callback=None,
    **predict_options,
) -> LotusPrediction:
    """Predict at full resolution: a global pass plus aligned, blended native-resolution tiles.

    Memory grows with ``tile_size`` (one tile is in the networks at a time) and, for the result
    buffers only, with the image. ``callback(done, total)`` counts the global pass and the tiles.
    Other options are those of ``predict``.
    """
    check_images(images)
    height, width = images.shape[-2:]
    tiles = tile_layout(height, width, tile_size, overlap)
    total_steps = len(tiles) + 1
    whole = predict(model, images, processing_resolution=processing_resolution, restore="bilinear",
                    **predict_options)
    if callback is not None:
        callback(1, total_steps)

    def tile_predictions():
        for done, tile in enumerate(tiles, start=2):
            values = predict(model, images[(..., *tile.region)], processing_resolution=0, **predict_options).values
            if callback is not None:
                callback(done, total_steps)
            yield values

    combined = blend_tiles(whole.values.cpu(), tiles, tile_predictions(), overlap,
                           align=model.quantity is not Quantity.NORMAL)
    if model.quantity is Quantity.NORMAL:
        combined = torch.nn.functional.normalize(combined, dim=1)
    else:
        combined = into_unit_range(combined)
    return LotusPrediction.from_values(combined.to(images.device), whole.latent, model.quantity)
