"""A depth map together with what its values mean, and turning affine-invariant maps into distances.

Lotus depth is affine-invariant: ``value = a * truth + b`` for an unknown ``a`` and ``b``, in depth
(v1.x checkpoints, near = 0) or in disparity = 1 / depth (``*-disparity`` checkpoints, near = 1).
Distances therefore need two numbers from the user, either the distances that the values 0 and 1
stand for (``with_near_far``) or the distances of two pixels (``with_known_distances``); the
affine map is applied where the model's affine ambiguity lives (in depth or in disparity).
Metric maps hold z-depth: the distance along the camera's viewing axis, not along the ray.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from .errors import LotusError
from .variants import Quantity

if TYPE_CHECKING:
    from .outputs import LotusPrediction


@dataclass(frozen=True)
class DepthMap:
    """Depth values and their meaning, as the save, colour, normal and point-cloud functions need it.

    Attributes:
        values: [B, 1, H, W] float. Affine-invariant depth or disparity (Lotus: in [0, 1]), or metric
            z-depth when ``unit`` is set.
        quantity: ``Quantity.DEPTH`` (near = low values) or ``Quantity.DISPARITY`` (near = high).
        model: the checkpoint that made it ("" if unknown), written into saved files.
        processing_resolution: the long edge the model saw (0 = native; None if unknown).
        unit: for metric z-depth, the unit of the distances it was made from (e.g. "m"); None for
            affine-invariant maps.
    """

    values: torch.Tensor
    quantity: Quantity
    model: str = ""
    processing_resolution: int | None = None
    unit: str | None = None

    def __post_init__(self) -> None:
        values = self.values
        if not isinstance(values, torch.Tensor) or values.ndim != 4 or values.shape[1] != 1:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise LotusError(f"DepthMap values must be a [B, 1, H, W] tensor, got {shape}")
        if not values.is_floating_point():
            raise LotusError(f"DepthMap values must be floating point, got {values.dtype}")
        quantity = Quantity(self.quantity)
        if quantity is Quantity.NORMAL:
            raise LotusError("a DepthMap holds depth or disparity, not normals")
        if self.unit is not None and quantity is not Quantity.DEPTH:
            raise LotusError("a metric DepthMap (unit set) holds z-depth: its quantity must be depth")
        object.__setattr__(self, "quantity", quantity)

    def _comfy_cache_tensors(self) -> list[torch.Tensor]:
        """The tensors this map keeps alive, for ComfyUI's RAM-pressure cache (newer ComfyUI sizes its
        cached outputs by them; 0.3.75 never calls this)."""
        return [self.values]

    @classmethod
    def from_prediction(cls, prediction: LotusPrediction, model: str = "",
                        processing_resolution: int | None = None) -> DepthMap:
        """The prediction's own values (not stretched), labelled with its quantity."""
        return cls(prediction.values, prediction.quantity, model, processing_resolution)

    @property
    def near_is_high(self) -> bool:
        return self.quantity.near_is_high

    @property
    def is_metric(self) -> bool:
        return self.unit is not None

    def with_values(self, values: torch.Tensor) -> DepthMap:
        return replace(self, values=values)


def with_near_far(depth: DepthMap, near: float, far: float, unit: str = "") -> DepthMap:
    """Metric z-depth from an affine-invariant map whose ends stand for ``near`` and ``far``.

    Depth (near = 0): ``z = near + v * (far - near)``. Disparity (near = 1): linear in 1 / z,
    ``1 / z = 1 / far + v * (1 / near - 1 / far)``. A metric map is returned unchanged.
    """
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
        polarity = "near = low" if depth.quantity is Quantity.DEPTH else "near = high"
        raise LotusError(f"the nearer of the two points has the farther map value, which contradicts the map's"
                         f" polarity ({depth.quantity.value}, {polarity}); check the points or the quantity")
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
