"""The VAE on overlapping tiles, for images whose activations would not fit in memory at once.

A tile sees only its own pixels, so the VAE's GroupNorm statistics and receptive field differ a
little from a whole-image pass. Tiles overlap by a quarter of their edge and are blended with
smooth weights that sum to one, which hides the seams (the error is measured in the README).
Without tiling (``tile`` None, or a tile covering the whole latent) the VAE runs as usual.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import AutoencoderKL

from .memory import VAE_SCALE
from .tile_grid import Tile, blend_weights, tile_layout


def count(latent_size: tuple[int, int], tile: int | None) -> int:
    """How many VAE passes one image of ``latent_size`` takes with ``tile`` (1: not tiled)."""
    tiles, _ = _layout(latent_size, tile)
    return 1 if tiles is None else len(tiles)


def encode(vae: AutoencoderKL, pixels: torch.Tensor, tile: int | None,
           on_tile: Callable[[], None] = lambda: None) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and standard deviation [B, 4, H/8, W/8] of ``pixels`` [B, 3, H, W] in [-1, 1];
    ``on_tile()`` after each tile (the whole image is one)."""
    latent_size = pixels.shape[-2] // VAE_SCALE, pixels.shape[-1] // VAE_SCALE
    tiles, overlap = _layout(latent_size, tile)
    if tiles is None:
        posterior = vae.encode(pixels).latent_dist
        on_tile()
        return posterior.mean, posterior.std
    mean = pixels.new_zeros(pixels.shape[0], vae.config.latent_channels, *latent_size)
    std = torch.zeros_like(mean)
    for region, weight in zip(tiles, blend_weights(tiles, *latent_size, overlap), strict=True):
        posterior = vae.encode(pixels[(..., *_scaled(region).region)]).latent_dist
        weight = weight.to(mean)
        mean[(..., *region.region)] += weight * posterior.mean
        std[(..., *region.region)] += weight * posterior.std
        on_tile()
    return mean, std


def decode(vae: AutoencoderKL, latents: torch.Tensor, tile: int | None,
           on_tile: Callable[[], None] = lambda: None) -> torch.Tensor:
    """The VAE decoder's output [B, 3, 8h, 8w] for scaled-back latents [B, 4, h, w]; ``on_tile()``
    after each tile."""
    latent_size = tuple(latents.shape[-2:])
    tiles, overlap = _layout(latent_size, tile)
    if tiles is None:
        decoded = vae.decode(latents, return_dict=False)[0]
        on_tile()
        return decoded
    pixel_tiles = [_scaled(t) for t in tiles]
    weights = blend_weights(pixel_tiles, latent_size[0] * VAE_SCALE, latent_size[1] * VAE_SCALE, overlap * VAE_SCALE)
    result = latents.new_zeros(latents.shape[0], vae.config.out_channels, *(edge * VAE_SCALE for edge in latent_size))
    for region, pixel_region, weight in zip(tiles, pixel_tiles, weights, strict=True):
        decoded = vae.decode(latents[(..., *region.region)], return_dict=False)[0]
        result[(..., *pixel_region.region)] += weight.to(result) * decoded
        on_tile()
    return result


def _layout(latent_size: tuple[int, int], tile: int | None) -> tuple[list[Tile] | None, int]:
    if tile is None or tile >= max(latent_size):
        return None, 0
    overlap = tile // 4
    return tile_layout(*latent_size, tile, overlap), overlap


def _scaled(tile: Tile) -> Tile:
    return Tile(tile.top * VAE_SCALE, tile.left * VAE_SCALE, tile.height * VAE_SCALE, tile.width * VAE_SCALE)
