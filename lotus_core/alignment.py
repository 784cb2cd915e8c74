"""Least-squares scale/shift alignment and robust normalisation of affine-invariant maps.

Lotus depth and disparity are affine-invariant: two predictions of one scene agree only up to
``a * x + b``. Everything that combines predictions (ensembles, tiles, video frames) first brings
them to a common scale and shift with these functions.
"""

from __future__ import annotations

import torch

from .errors import LotusError


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


def percentile_range(values: torch.Tensor, low: float, high: float, dims=(1, 2, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``low`` and ``high`` percentiles (0..100) of ``values`` over ``dims`` (kept as size 1)."""
    if not 0 <= low < high <= 100:
        raise LotusError(f"percentiles ({low}, {high}) must satisfy 0 <= low < high <= 100")
    return _percentile(values, low, dims), _percentile(values, high, dims)


def _percentile(values: torch.Tensor, q: float, dims) -> torch.Tensor:
    if q in (0, 100):  # exact and fast
        return values.amin(dims, keepdim=True) if q == 0 else values.amax(dims, keepdim=True)
    dims = [d % values.ndim for d in dims]
    kept = [d for d in range(values.ndim) if d not in dims]
    flat = values.permute(*kept, *dims).reshape(*[values.shape[d] for d in kept], -1).float()
    # torch.quantile refuses very large inputs; a strided sample of 2^24 values is ample for a percentile.
    flat = flat[..., :: max(1, flat.shape[-1] // (1 << 24))]
    result = torch.quantile(flat, q / 100, dim=-1)
    return result.reshape([1 if d in dims else values.shape[d] for d in range(values.ndim)]).to(values.dtype)


def normalize(values: torch.Tensor, low: float = 0.0, high: float = 100.0, *, per_image: bool = True,
              gamma: float = 1.0) -> torch.Tensor:
    """Stretch ``values`` [B, 1, H, W] so the ``low``/``high`` percentiles map to 0 and 1, clip, apply gamma.

    ``per_image=False`` takes the percentiles over the whole batch (a video sequence keeps one scale).
    A flat map (no spread) becomes mid-grey rather than dividing by zero.
    """
    if gamma <= 0:
        raise LotusError(f"gamma={gamma} must be > 0")
    lo, hi = percentile_range(values, low, high, dims=(1, 2, 3) if per_image else (0, 1, 2, 3))
    span = hi - lo
    stretched = ((values - lo) / span.clamp_min(1e-12)).clamp(0, 1)
    stretched = torch.where(span > 0, stretched, torch.full_like(values, 0.5))
    return stretched if gamma == 1 else stretched.pow(gamma)


def into_unit_range(values: torch.Tensor) -> torch.Tensor:
    """``values`` unchanged if they lie in [0, 1], else mapped into it by ONE scale and shift for the
    whole tensor: aligned maps can leave [0, 1], and a shared map keeps frames and tiles consistent."""
    low, high = values.min(), values.max()
    if low >= 0 and high <= 1:
        return values
    return (values - low) / (high - low).clamp_min(1e-12)
