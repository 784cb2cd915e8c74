"""How much memory a prediction needs, how much the device has, and a plan that fits one in the other.

The plan has two knobs: how many images go through the networks at once (``chunk_size``) and
whether the VAE works on overlapping tiles of the image (``vae_tile``, in latent pixels), which
bounds its activations, the largest of the three networks', by the tile instead of the image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import psutil
import torch

from ..errors import LotusError
from .images import processing_size

log = logging.getLogger(__name__)

# Peak activations per processed pixel, in elements of the VAE's dtype, for the SD VAE and the SD2
# UNet. From the official pipeline's fp32 working sets, measured on this project's CPU (decoder 1.1 GB at 512²
# and 2.3 GB at 768², UNet 0.1-0.3 GB), rounded up. The VAE's is its decoder's: the encoder, which
# runs before the UNet and never at the same time, needs less (0.7 / 1.4 GB).
VAE_ELEMENTS_PER_PIXEL = 1100
UNET_ELEMENTS_PER_PIXEL = 150
USABLE_FRACTION = 0.75  # of the memory the device reports available: room for everything else
MIN_VAE_TILE = 32  # latent px (256 image px): below this a tile sees too little of the image
MAX_AUTO_CHUNK = 16
VAE_SCALE = 8  # image px per latent px


@dataclass(frozen=True)
class MemoryPlan:
    chunk_size: int  # images per pass through the networks
    vae_tile: int | None  # VAE tile edge in latent px; None = the whole image at once

    def describe(self) -> str:
        tiles = "whole image" if self.vae_tile is None else f"{self.vae_tile * VAE_SCALE} px tiles"
        return f"{self.chunk_size} image(s) per pass, VAE on the {tiles}"

    def smaller(self, latent_size: tuple[int, int]) -> MemoryPlan | None:
        """The next plan to try after running out of memory: half the chunk, then half the VAE tile."""
        if self.chunk_size > 1:
            return replace(self, chunk_size=self.chunk_size // 2)
        tile = max(latent_size) if self.vae_tile is None else self.vae_tile
        if tile <= MIN_VAE_TILE:
            return None
        return replace(self, vae_tile=max(MIN_VAE_TILE, _round_down(tile // 2)))


def available_bytes(device: torch.device) -> int:
    """Memory the device can still give: free + cached-but-unused on CUDA, the OS's estimate on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "mps":
        return max(0, torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return psutil.virtual_memory().available


def memory_budget(device: torch.device, memory_limit: int | None = None) -> int:
    """Bytes a prediction's activations may use: ``memory_limit`` if given, else ``USABLE_FRACTION``
    of what the device has available."""
    _check_optional_int("memory_limit", memory_limit, 1, "a number of bytes >= 1, or None for the free memory")
    return memory_limit if memory_limit is not None else usable_bytes(available_bytes(device))


def usable_bytes(available: int) -> int:
    """The share of ``available`` bytes a prediction may fill, leaving room for everything else."""
    return int(available * USABLE_FRACTION)


def check_fits(image_size: tuple[int, int], processing_resolution: int, element_size: int, budget: int,
               *, vae_tiles: bool = True) -> None:
    """Refuse, before any work, a processing size whose activations cannot fit in ``budget`` bytes even
    with the smallest VAE tiles (``vae_tiles``), naming the largest processing_resolution that fits."""
    size = processing_size(*image_size, processing_resolution)
    need = working_bytes(size, element_size, MIN_VAE_TILE if vae_tiles else None)
    if need <= budget:
        return
    low, high = 0, max(size) // VAE_SCALE  # in steps of 8 px: the largest resolution that fits
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if _fits(image_size, middle * VAE_SCALE, element_size, budget, vae_tiles) \
            else (low, middle - 1)
    advice = (f"the largest processing_resolution that fits is {low * VAE_SCALE}" if low * VAE_SCALE >= 64
              else "free memory used by other models first")
    raise LotusError(
        f"processing_resolution={processing_resolution} means {size[1]}x{size[0]} px for this"
        f" {image_size[1]}x{image_size[0]} image, which needs about {need / 1e9:.1f} GB of working memory;"
        f" {budget / 1e9:.1f} GB are available: {advice} (or use bf16/fp16, or free memory)")


def activation_bytes(model, image_size: tuple[int, int], processing_resolution: int, images: int = 1, *,
                     tile_size: int | None = None) -> int:
    """Working memory ``images`` of ``image_size`` (h, w) need at ``processing_resolution`` with the
    whole-image VAE: what a host should make room for before predicting (ComfyUI's model
    management). With ``tile_size``: high-res tiles, the larger of the global pass and one tile."""
    element_size = model.vae.dtype.itemsize
    need = working_bytes(processing_size(*image_size, processing_resolution), element_size)
    if tile_size is not None:
        tile = (min(tile_size, image_size[0]), min(tile_size, image_size[1]))
        need = max(need, working_bytes(tile, element_size))
    return need * images


def _fits(image_size: tuple[int, int], resolution: int, element_size: int, budget: int, vae_tiles: bool) -> bool:
    try:
        size = processing_size(*image_size, resolution)
    except LotusError:  # too small to process at all
        return False
    return working_bytes(size, element_size, MIN_VAE_TILE if vae_tiles else None) <= budget


def working_bytes(size: tuple[int, int], element_size: int, vae_tile: int | None = None) -> int:
    """Estimated peak activation memory for one image processed at ``size`` (h, w)."""
    pixels = size[0] * size[1]
    vae_pixels = pixels if vae_tile is None else min(pixels, (vae_tile * VAE_SCALE) ** 2)
    return (VAE_ELEMENTS_PER_PIXEL * vae_pixels + UNET_ELEMENTS_PER_PIXEL * pixels) * element_size


def plan_memory(
    batch: int,
    size: tuple[int, int],
    element_size: int,
    device: torch.device,
    *,
    chunk_size: int | None = None,
    vae_tile_size: int | None = None,
    memory_limit: int | None = None,
) -> MemoryPlan:
    """Choose what ``predict`` was not told: images per pass and VAE tiles, to fit the memory budget.

    Args:
        size: processing size (h, w) in image px.
        chunk_size: images per pass; None = as many as fit (1 on a CPU, where batching gains no speed).
        vae_tile_size: VAE tile edge in image px (a multiple of 8, >= 256); 0 = never tile;
            None = tile only when the whole image would not fit.
        memory_limit: bytes the activations may use; None = ``USABLE_FRACTION`` of what is available.
    """
    _check_optional_int("chunk_size", chunk_size, 1, "an integer >= 1, or None to choose from free memory")
    budget = memory_budget(device, memory_limit)
    vae_tile = _vae_tile(size, element_size, vae_tile_size, budget)
    if chunk_size is None:
        fits = budget // working_bytes(size, element_size, vae_tile)
        chunk_size = 1 if device.type == "cpu" else int(max(1, min(batch, fits, MAX_AUTO_CHUNK)))
    return MemoryPlan(min(chunk_size, batch), vae_tile)


def check_vae_tile_size(vae_tile_size: int | None) -> None:
    """Refuse a ``vae_tile_size`` that is not None, 0 or a multiple of 8 of at least the smallest tile."""
    if vae_tile_size is None:
        return
    minimum = MIN_VAE_TILE * VAE_SCALE
    multiple = isinstance(vae_tile_size, int) and not vae_tile_size % VAE_SCALE
    if not multiple or vae_tile_size < 0 or 0 < vae_tile_size < minimum:
        raise LotusError(f"vae_tile_size={vae_tile_size!r} must be 0 (never tile), None (tile when memory is"
                         f" short) or a multiple of {VAE_SCALE} >= {minimum} px")


def _vae_tile(size: tuple[int, int], element_size: int, vae_tile_size: int | None, budget: int) -> int | None:
    latent_edge = max(size) // VAE_SCALE
    if vae_tile_size is not None:
        check_vae_tile_size(vae_tile_size)
        tile = vae_tile_size // VAE_SCALE
        return None if vae_tile_size == 0 or tile >= latent_edge else tile
    if working_bytes(size, element_size) <= budget:
        return None
    tile = _round_down(latent_edge)
    while tile > MIN_VAE_TILE and working_bytes(size, element_size, tile) > budget:
        tile = _round_down(tile - 1)
    tile = max(tile, MIN_VAE_TILE)
    log.info("Lotus: %.1f GB free for activations, so the VAE works on %d px tiles", budget / 1e9, tile * VAE_SCALE)
    return tile


def _round_down(latent: int) -> int:
    return max(MIN_VAE_TILE, latent - latent % 8)


def _check_optional_int(argument: str, value, minimum: int, rule: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
        raise LotusError(f"{argument}={value!r} must be {rule}")
