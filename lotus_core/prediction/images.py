"""Image checks and the reference's resizing, with torch's own kernels (no torchvision).

torchvision's tensor ``resize`` calls ``torch.nn.functional.interpolate`` with
``align_corners=False`` and the given antialias flag; calling it directly gives the same numbers.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F

from ..errors import LotusError, check_choice

MIN_EDGE = 8  # the VAE downsamples by 8: anything smaller has no latent pixel
RESIZE_MODES = ("bilinear", "bicubic", "nearest-exact")
# How far outside [0, 1] values may stray and still be resampling overshoot (bicubic: about 0.2).
OVERSHOOT = 0.5

log = logging.getLogger(__name__)
T = TypeVar("T")


def check_images(images: torch.Tensor) -> torch.Tensor:
    """``images`` checked as a finite float [B, 3, H, W] batch in [0, 1] with edges >= 8 px.

    Resampling overshoot (a bicubic or Lanczos upscale gives values a little outside [0, 1]) is
    clamped, with one log line, and the clamped batch returned; values further out are refused,
    because they mean another scale (0..255, -1..1) that clamping would silently misread.
    """
    if not isinstance(images, torch.Tensor):
        raise LotusError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise LotusError(
            f"images must have shape [B, 3, H, W] (RGB, channels first), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise LotusError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise LotusError("images is an empty batch (B = 0)")
    _check_edges(*images.shape[-2:])
    low, high = (value.item() for value in torch.aminmax(images))  # one pass: NaN and Inf show here too
    if not (math.isfinite(low) and math.isfinite(high)):
        raise LotusError("images contain NaN or Inf values; every value must be finite and in [0, 1]")
    if 0 <= low and high <= 1:
        return images
    if low < -OVERSHOOT or high > 1 + OVERSHOOT:
        hint = (" They look like 0..255 values: divide by 255." if high > 2 else
                " They look like -1..1 values: map them with (x + 1) / 2." if low < -OVERSHOOT else "")
        raise LotusError(f"image values must lie in [0, 1], got min {low:.4g} and max {high:.4g}.{hint}")
    log.info("Lotus: image values from %.3g to %.3g (resampling overshoot) clamped to [0, 1]", low, high)
    return images.clamp(0, 1)


def validating_images(run: Callable[..., T]) -> Callable[..., T]:
    """``run(model, images, **options)`` that first checks ``images`` (``check_images``): the public
    face of a prediction function, whose own callers inside the core pass images checked once."""

    @functools.wraps(run)
    def checked(model, images, **options) -> T:
        if options.get("prepared_size") is not None:  # made by ``network_pixels``: [-1, 1], trusted
            return run(model, images, **options)
        return run(model, check_images(images), **options)

    return checked


def _check_edges(height: int, width: int) -> None:
    if min(height, width) < MIN_EDGE:
        raise LotusError(f"images of {width}x{height} px are too small: both edges must be >= {MIN_EDGE} px")


def processing_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """The size the reference processes an image at: long edge = ``resolution`` (0 = native).

    As in the reference, both edges are truncated, small images are upscaled, and nothing is padded
    or rounded to a multiple of 8.
    """
    if not isinstance(resolution, int) or resolution < 0:
        raise LotusError(f"processing_resolution={resolution!r} must be an integer >= 0 (0 = native size)")
    _check_edges(height, width)
    if resolution == 0:
        return height, width
    factor = min(resolution / width, resolution / height)
    size = int(height * factor), int(width * factor)
    if min(size) < MIN_EDGE:
        raise LotusError(
            f"an image of {width}x{height} px at processing_resolution={resolution} becomes"
            f" {size[1]}x{size[0]} px; both edges must be >= {MIN_EDGE} px (use a larger resolution)"
        )
    return size


def resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize [B, C, H, W] to ``size`` like torchvision: antialiased bilinear/bicubic, or nearest-exact."""
    check_resize_mode("mode", mode)
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if mode == "nearest-exact":
        return F.interpolate(images, size=size, mode=mode)
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=True)


def check_resize_mode(argument: str, mode: str) -> None:
    check_choice(argument, mode, RESIZE_MODES)
