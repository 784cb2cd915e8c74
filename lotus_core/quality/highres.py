"""Seamless high resolution: a global prediction refined by overlapping native-resolution tiles.

The global pass (at the processing resolution) fixes the scene's layout and depth range; each tile,
predicted at the image's own resolution, brings the detail. Because Lotus depth is affine-invariant,
each tile is first mapped onto the global prediction by least-squares scale and shift over its area;
tiles are then blended with smooth weights that sum to one at every pixel, so no seam shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import torch

from ..depthmap import DepthMap
from ..errors import LotusError
from ..loading.model import LotusModel
from ..loading.variants import Quantity
from ..prediction.images import validating_images
from ..prediction.memory import MIN_VAE_TILE, memory_budget, working_bytes
from ..prediction.predict import DEFAULT_PROCESSING_RESOLUTION, run_prediction
from ..prediction.tile_grid import Tile, blend_weights, tile_layout
from ..progress import part
from .alignment import align_to, into_unit_range

DEFAULT_TILE_SIZE = 768
DEFAULT_OVERLAP = 128


def _predict_tiled(
    model: LotusModel,
    images: torch.Tensor,
    *,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    processing_resolution: int = DEFAULT_PROCESSING_RESOLUTION,
    callback=None,
    **predict_options,
) -> DepthMap:
    """Predict at full resolution: a global pass plus aligned, blended native-resolution tiles.

    Memory grows with ``tile_size`` (one tile is in the networks at a time) and, for the result
    buffers only, with the image. ``callback(done, total)`` counts the steps of the global pass and
    of every tile.
    Other options are those of ``predict`` (``restore`` is this function's: bilinear).
    """
    if "restore" in predict_options:
        raise LotusError("predict_tiled restores the global pass itself (bilinear, so tiles align smoothly):"
                         " leave out restore")
    height, width = images.shape[-2:]
    tiles = tile_layout(height, width, tile_size, overlap)
    _check_tile_fits(model, (min(tile_size, height), min(tile_size, width)), tile_size, predict_options)
    passes = len(tiles) + 1
    whole = run_prediction(model, images, processing_resolution=processing_resolution, restore="bilinear",
                           callback=part(callback, 0, passes), **predict_options)

    def tile_predictions():
        for index, tile in enumerate(tiles, start=1):
            yield run_prediction(model, images[(..., *tile.region)], processing_resolution=0,
                                 callback=part(callback, index, passes), **predict_options).values

    combined = blend_tiles(whole.values.cpu(), tiles, tile_predictions(), overlap,
                           align=model.quantity is not Quantity.NORMAL)
    if model.quantity is Quantity.NORMAL:
        combined = torch.nn.functional.normalize(combined, dim=1)
    else:
        combined = into_unit_range(combined)
    return replace(whole, values=combined.to(images.device))


predict_tiled = validating_images(_predict_tiled)


def _check_tile_fits(model: LotusModel, tile: tuple[int, int], tile_size: int, options: dict) -> None:
    """Refuse, before any work, a tile whose native-resolution pass cannot fit in the memory budget."""
    budget = memory_budget(model.device, options.get("memory_limit"))
    need = working_bytes(tile, model.vae.dtype.itemsize, None if options.get("vae_tile_size") == 0 else MIN_VAE_TILE)
    if need > budget:
        raise LotusError(f"tile_size={tile_size}: one {tile[1]}x{tile[0]} px tile needs about {need / 1e9:.1f} GB of"
                         f" working memory; {budget / 1e9:.1f} GB are available: use a smaller tile_size")


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
