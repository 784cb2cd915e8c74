"""Least-squares scale/shift alignment of affine-invariant maps.

Lotus depth and disparity are affine-invariant: two predictions of one scene agree only up to
``a * x + b``. Everything that combines predictions (ensembles, tiles, video frames) first brings
them to a common scale and shift with these functions.
"""

from __future__ import annotations

import torch

from ..errors import LotusError


def fit_scale_shift(source: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None):
    """Per-image ``(scale, shift)`` minimising ``sum(weight * (scale * source + shift - target)^2)``.

    Args:
        source, target: [B, 1, H, W].
        weight: [B or 1, 1, H, W] non-negative pixel weights (e.g. a validity mask); default all ones.

    Returns:
        scale, shift: [B, 1, 1, 1]. A constant source gets scale 0 and the target's weighted mean.
    """
    if source.shape != target.shape or source.ndim != 4 or source.shape[1] != 1:
        raise LotusError(f"fit_scale_shift needs two [B, 1, H, W] maps, got {tuple(source.shape)}"
                         f" and {tuple(target.shape)}")
    weight = torch.ones_like(source) if weight is None else weight.expand_as(source)
    dims = (1, 2, 3)
    total = weight.sum(dims, keepdim=True).clamp_min(1e-12)
    mean_x = (weight * source).sum(dims, keepdim=True) / total
    mean_y = (weight * target).sum(dims, keepdim=True) / total
    dx, dy = source - mean_x, target - mean_y
    variance = (weight * dx * dx).sum(dims, keepdim=True)
    covariance = (weight * dx * dy).sum(dims, keepdim=True)
    scale = torch.where(variance > 1e-12, covariance / variance.clamp_min(1e-12), torch.zeros_like(variance))
    return scale, mean_y - scale * mean_x


def align_to(source: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``source`` mapped by the least-squares scale and shift that best match ``target``."""
    scale, shift = fit_scale_shift(source, target, weight)
    return scale * source + shift


def into_unit_range(values: torch.Tensor) -> torch.Tensor:
    """``values`` unchanged if they lie in [0, 1], else mapped into it by ONE scale and shift for the
    whole tensor: aligned maps can leave [0, 1], and a shared map keeps frames and tiles consistent."""
    low, high = values.min(), values.max()
    if low >= 0 and high <= 1:
        return values
    return (values - low) / (high - low).clamp_min(1e-12)
