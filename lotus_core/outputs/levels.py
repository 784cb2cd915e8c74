"""Percentile ranges and levels (in/out range, gamma, invert, clip) for depth maps of any range."""

from __future__ import annotations

import torch

from ..errors import LotusError


def percentile_range(values: torch.Tensor, low: float = 0.0, high: float = 100.0, *,
                     per_image: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``low`` and ``high`` percentiles (0..100, numpy's linear method) of [B, C, H, W] values.

    Returns two [B, 1, 1, 1] tensors: per image, or the whole batch's range repeated for every image
    (``per_image=False``: one scale for all frames of a video, so brightness does not flicker).
    """
    _check_percentiles(low, high)
    if values.ndim != 4:
        raise LotusError(f"values must be [B, C, H, W], got {tuple(values.shape)}")
    batch = values.shape[0]
    flat = values.reshape(batch, -1).float() if per_image else values.reshape(1, -1).float()
    ordered = flat.sort(dim=1).values if (low, high) != (0.0, 100.0) else None
    bounds = []
    for q in (low, high):
        if q in (0.0, 100.0):
            bound = flat.amin(dim=1) if q == 0 else flat.amax(dim=1)
        else:
            position = q / 100 * (flat.shape[1] - 1)
            below = int(position)
            above = min(below + 1, flat.shape[1] - 1)
            fraction = position - below
            bound = ordered[:, below] + fraction * (ordered[:, above] - ordered[:, below])
        bounds.append(bound.reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1))
    return bounds[0], bounds[1]


def normalize(values: torch.Tensor, low: float = 0.0, high: float = 100.0, *, per_image: bool = True,
              gamma: float = 1.0) -> torch.Tensor:
    """Stretch [B, C, H, W] values so the ``low``/``high`` percentiles become 0/1, clipped to [0, 1],
    then ``t ** gamma``. An image without range (all values equal) becomes 0.5: it has no near or far.
    """
    lo, hi = percentile_range(values, low, high, per_image=per_image)
    return remap(values, lo, hi, gamma=gamma)


def remap(values: torch.Tensor, in_low: torch.Tensor | float = 0.0, in_high: torch.Tensor | float = 1.0, *,
          gamma: float = 1.0, invert: bool = False, clip: bool = True, out_low: float = 0.0,
          out_high: float = 1.0) -> torch.Tensor:
    """Levels, elementwise on any tensor: ``in_low..in_high`` -> 0..1 (clipped if ``clip``), then
    ``t ** gamma`` (< 1 lifts low values, > 1 deepens them; sign kept for unclipped negatives), then
    ``1 - t`` if ``invert``, then 0..1 -> ``out_low..out_high``.

    ``in_low``/``in_high`` may be [B, 1, 1, 1] tensors (e.g. from ``percentile_range``).
    """
    if not gamma > 0:
        raise LotusError(f"gamma={gamma!r} must be > 0")
    if not isinstance(in_low, torch.Tensor) and not isinstance(in_high, torch.Tensor) and in_low == in_high:
        raise LotusError(f"in_low and in_high are both {in_low!r}: the input range is empty")
    low = torch.as_tensor(in_low, dtype=torch.float32, device=values.device)
    span = torch.as_tensor(in_high, dtype=torch.float32, device=values.device) - low
    # A measured range can be empty (a flat frame): it has no near or far, so it maps to the middle.
    t = torch.where(span != 0, (values.float() - low) / torch.where(span != 0, span, 1), 0.5)
    if clip:
        t = t.clamp(0, 1)
    if gamma != 1:
        t = t.sign() * t.abs() ** gamma
    if invert:
        t = 1 - t
    return out_low + t * (out_high - out_low)


def _check_percentiles(low: float, high: float) -> None:
    if not (0 <= low < high <= 100):
        raise LotusError(f"percentiles low={low!r} and high={high!r} must satisfy 0 <= low < high <= 100")
