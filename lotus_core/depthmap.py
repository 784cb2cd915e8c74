"""The one value type: a prediction's values together with what they mean and where they came from.

Lotus depth is affine-invariant: ``value = a * truth + b`` for an unknown ``a`` and ``b``, in depth
(v1.x checkpoints, near = 0) or in disparity = 1 / depth (``*-disparity`` checkpoints, near = 1);
``metric.py`` turns it into distances. Which end is near is read in one place,
``DepthMap.nearness``: the ControlNet map, the colour maps and the geometry's height fields start from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .errors import LotusError
from .loading.variants import Quantity, coerce_quantity
from .outputs.levels import normalize


@dataclass(frozen=True)
class DepthMap:
    """What every prediction returns and every output function takes.

    Attributes:
        values: [B, 1, H, W] float depth or disparity (Lotus: in [0, 1]; metric z-depth when ``unit``
            is set), or [B, 3, H, W] unit normals (x left, y up, z towards the viewer).
        quantity: ``Quantity.DEPTH`` (near = low values), ``Quantity.DISPARITY`` (near = high) or
            ``Quantity.NORMAL``.
        model: the checkpoint that made it ("" if unknown), written into saved files.
        processing_resolution: the long edge the model saw (0 = native; None if unknown).
        unit: for metric z-depth, the unit of its distances (e.g. "m"); None for affine-invariant maps.
        latent: [B, 4, h, w] the predicted clean latent (x0), e.g. to blend into the next video frame.
        uncertainty: [B, 1, H, W] spread of an ensemble's members (None for single predictions).
    """

    values: torch.Tensor
    quantity: Quantity
    model: str = ""
    processing_resolution: int | None = None
    unit: str | None = None
    latent: torch.Tensor | None = None
    uncertainty: torch.Tensor | None = None

    def __post_init__(self) -> None:
        quantity = coerce_quantity(self.quantity)
        values, channels = self.values, 3 if quantity is Quantity.NORMAL else 1
        if not isinstance(values, torch.Tensor) or values.ndim != 4 or values.shape[1] != channels:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise LotusError(f"{quantity.value} values must be a [B, {channels}, H, W] tensor, got {shape}")
        if not values.is_floating_point():
            raise LotusError(f"values must be floating point, got {values.dtype}")
        if self.unit is not None and quantity is not Quantity.DEPTH:
            raise LotusError("a metric map (unit set) holds z-depth: its quantity must be depth")
        object.__setattr__(self, "quantity", quantity)

    @property
    def near_is_high(self) -> bool:
        return self.quantity.near_is_high

    @property
    def is_metric(self) -> bool:
        return self.unit is not None

    @property
    def polarity(self) -> str:
        """Which end of the values is near, in words (as written into saved files)."""
        return "near = high" if self.near_is_high else "near = low"

    def require_depth(self, what: str) -> None:
        """Refuse normals where depth or disparity is needed, naming ``what`` needs it."""
        if self.quantity is Quantity.NORMAL:
            raise LotusError(f"{what} needs depth or disparity, got normals")

    def nearness(self, low: float = 0.0, high: float = 100.0, *, per_image: bool = True, gamma: float = 1.0,
                 stretch: bool = True, near: int = 1) -> torch.Tensor:
        """[B, 1, H, W] in [0, 1] with near = ``near`` (1 or 0): the values stretched so that
        percentiles ``low`` and ``high`` become the ends (``stretch=False``: Lotus values taken as
        they are, clipped to [0, 1]). The values are flipped at most once, so ``near`` at the model's
        own end gives exactly ``normalize(values)``."""
        self.require_depth("nearness")
        if not stretch and self.is_metric:
            raise LotusError("stretch=False takes values in 0..1 as they are; a metric map holds distances:"
                             " stretch it")
        values = self.values.float()
        flip = self.near_is_high != (near == 1)
        if not stretch:
            values = values.clamp(0, 1)
            return 1 - values if flip else values
        return normalize(1 - values if flip else values, low, high, per_image=per_image, gamma=gamma)

    def frame(self, index: int) -> DepthMap:
        """One image of the batch (as a batch of one)."""
        part = slice(index, index + 1)
        return replace(self, values=self.values[part],
                       latent=None if self.latent is None else self.latent[part],
                       uncertainty=None if self.uncertainty is None else self.uncertainty[part])

    def with_values(self, values: torch.Tensor) -> DepthMap:
        return replace(self, values=values)

    def _comfy_cache_tensors(self) -> list[torch.Tensor]:
        """The tensors this map keeps alive, for ComfyUI's RAM-pressure cache (newer ComfyUI sizes its
        cached outputs by them; 0.3.75 never calls this)."""
        return [t for t in (self.values, self.latent, self.uncertainty) if t is not None]

    # -- kept for code written against the two types this one replaces (see README: Python API) --

    @property
    def image(self) -> torch.Tensor:
        """Deprecated: [B, 3, H, W] in [0, 1]: depth repeated over 3 channels, normals as (n + 1) / 2."""
        if self.quantity is Quantity.NORMAL:
            return (self.values + 1) / 2
        return self.values.expand(-1, 3, -1, -1)

    @classmethod
    def from_values(cls, values: torch.Tensor, latent: torch.Tensor | None, quantity: Quantity,
                    uncertainty: torch.Tensor | None = None) -> DepthMap:
        """Deprecated: ``DepthMap(values, quantity, latent=latent, uncertainty=uncertainty)``."""
        return cls(values, quantity, latent=latent, uncertainty=uncertainty)

    @classmethod
    def from_prediction(cls, prediction: DepthMap, model: str = "",
                        processing_resolution: int | None = None) -> DepthMap:
        """Deprecated: a prediction already is a DepthMap; this relabels its model and resolution."""
        return replace(prediction, model=model or prediction.model,
                       processing_resolution=processing_resolution if processing_resolution is not None
                       else prediction.processing_resolution)


# The name ``predict`` returned before there was one type (README: Python API, deprecations).
LotusPrediction = DepthMap


def to_controlnet(prediction: DepthMap, *, low: float = 0.0, high: float = 100.0, per_image: bool = True,
                  gamma: float = 1.0) -> torch.Tensor:
    """[B, 1, H, W] in [0, 1] with near = white, stretched so percentiles ``low``/``high`` become 0/1.

    The defaults (each image's min..max) give what depth ControlNets were trained on (MiDaS-style
    relative inverse depth), whatever the checkpoint's polarity. ``per_image=False`` keeps one scale
    over the batch (video); ``gamma`` < 1 brightens the far range, > 1 darkens it.
    """
    prediction.require_depth("to_controlnet")
    return prediction.nearness(low, high, per_image=per_image, gamma=gamma)


def normals_to_image(prediction: DepthMap) -> torch.Tensor:
    """[B, 3, H, W] normal map in [0, 1] from the unit vectors ((n + 1) / 2)."""
    if prediction.quantity is not Quantity.NORMAL:
        raise LotusError(f"normals_to_image needs a normal prediction, got {prediction.quantity.value}")
    return (prediction.values + 1) / 2
