"""Distances from affine-invariant depth: the two numbers the user knows fix the model's scale and shift.

Lotus depth is affine-invariant in depth (v1.x, near = 0) or in disparity (``*-disparity``, near = 1).
The affine map is applied where that ambiguity lives. Metric maps hold z-depth: the distance along
the camera's viewing axis, not along the ray.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..depthmap import DepthMap
from ..errors import LotusError
from ..loading.variants import Quantity


def with_near_far(depth: DepthMap, near: float, far: float, unit: str = "") -> DepthMap:
    """Metric z-depth from an affine-invariant map whose ends stand for ``near`` and ``far``.

    Depth (near = 0): ``z = near + v * (far - near)``. Disparity (near = 1): linear in 1 / z,
    ``1 / z = 1 / far + v * (1 / near - 1 / far)``. A metric map is returned unchanged.
    """
    depth.require_depth("with_near_far")
    if depth.is_metric:
        return depth
    if not (0 < near < far):
        raise LotusError(f"near={near!r} and far={far!r} must satisfy 0 < near < far")
    v = depth.values.float()
    if depth.quantity is Quantity.DEPTH:
        z = near + v * (far - near)
    else:
        z = 1 / (1 / far + v * (1 / near - 1 / far))
    _check_positive(z, f"near={near} and far={far}")
    return replace(depth, values=z, quantity=Quantity.DEPTH, unit=unit)


def with_known_distances(depth: DepthMap, first: tuple[int, int, float], second: tuple[int, int, float],
                         unit: str = "") -> DepthMap:
    """Metric z-depth from two pixels whose distances are known, fitted per image.

    Args:
        first, second: ``(x, y, distance)``: pixel column and row (0-based, from the top left) and
            that point's z-depth. Depth maps get ``z = a * v + b``, disparity maps ``1 / z = a * v + b``,
            with ``a`` and ``b`` solved per image from the two pixels.
    """
    depth.require_depth("with_known_distances")
    if depth.is_metric:
        raise LotusError("the depth map is already metric; known distances apply to affine-invariant maps")
    _, _, height, width = depth.values.shape
    samples, targets = [], []
    for name, (x, y, distance) in (("first", first), ("second", second)):
        if not (0 <= x < width and 0 <= y < height):
            raise LotusError(f"{name} point ({x}, {y}) is outside the {width}x{height} image")
        if not distance > 0:
            raise LotusError(f"{name} point's distance={distance!r} must be > 0")
        samples.append(depth.values[:, 0, int(y), int(x)].double())  # [B]
        targets.append(distance if depth.quantity is Quantity.DEPTH else 1 / distance)
    if first[2] == second[2]:
        raise LotusError("the two known distances are equal: they fix no scale; pick points at different depths")
    span = samples[1] - samples[0]
    flat = span.abs() < 1e-6
    if flat.any():
        frames = ", ".join(str(i) for i in flat.nonzero().flatten().tolist())
        raise LotusError(f"the map has the same value at both points (frame {frames}): pick points at"
                         " different depths")
    scale = (targets[1] - targets[0]) / span  # [B]
    if (scale <= 0).any():
        raise LotusError(f"the nearer of the two points has the farther map value, which contradicts the map's"
                         f" polarity ({depth.quantity.value}, {depth.polarity}); check the points or the quantity")
    shift = targets[0] - scale * samples[0]
    fitted = depth.values.double() * scale[:, None, None, None] + shift[:, None, None, None]
    z = fitted if depth.quantity is Quantity.DEPTH else 1 / fitted
    _check_positive(fitted, "the two known distances")
    return replace(depth, values=z.float(), quantity=Quantity.DEPTH, unit=unit)


def _check_positive(values: torch.Tensor, source: str) -> None:
    bad = ~(values > 0) | ~torch.isfinite(values)
    if bad.any():
        share = bad.float().mean().item() * 100
        raise LotusError(f"{source} give a distance <= 0 or infinite at {share:.2g}% of the pixels: the map's"
                         " values reach beyond what the two numbers can explain; choose them further apart")
