"""Turning a prediction into the conventions other tools expect."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import LotusError
from .levels import normalize
from .variants import Quantity


@dataclass(frozen=True)
class LotusPrediction:
    """One batch of Lotus predictions at the input size.

    Attributes:
        image: [B, 3, H, W] in [0, 1]: from ``predict``, the decoded output exactly as the reference
            pipeline returns it; from the ensemble/tiled/video functions, their combined result in the
            same encoding.
        latent: [B, 4, h, w] the predicted clean latent (x0), e.g. to blend into the next video frame.
        quantity: what ``image`` encodes.
        uncertainty: [B, 1, H, W] spread of an ensemble's members (None for single predictions).
    """

    image: torch.Tensor
    latent: torch.Tensor
    quantity: Quantity
    uncertainty: torch.Tensor | None = None

    @property
    def values(self) -> torch.Tensor:
        """Depth or disparity as [B, 1, H, W] in [0, 1] (channel mean, as the reference), or
        normals as [B, 3, H, W] unit vectors (x left, y up, z towards the viewer)."""
        if self.quantity is Quantity.NORMAL:
            return torch.nn.functional.normalize(self.image * 2 - 1, dim=1)
        return self.image.mean(dim=1, keepdim=True)

    def frame(self, index: int) -> LotusPrediction:
        """The prediction of one image of the batch (as a batch of one)."""
        part = slice(index, index + 1)
        uncertainty = None if self.uncertainty is None else self.uncertainty[part]
        return LotusPrediction(self.image[part], self.latent[part], self.quantity, uncertainty)

    @classmethod
    def from_values(cls, values: torch.Tensor, latent: torch.Tensor, quantity: Quantity,
                    uncertainty: torch.Tensor | None = None) -> LotusPrediction:
        """The prediction whose ``values`` are ``values`` (depth [B, 1, H, W] or unit normals [B, 3, H, W])."""
        image = (values + 1) / 2 if quantity is Quantity.NORMAL else values.expand(-1, 3, -1, -1)
        return cls(image.contiguous(), latent, quantity, uncertainty)


def to_controlnet(prediction: LotusPrediction, *, low: float = 0.0, high: float = 100.0, per_image: bool = True,
                  gamma: float = 1.0) -> torch.Tensor:
    """[B, 1, H, W] in [0, 1] with near = white, stretched so percentiles ``low``/``high`` become 0/1.

    The defaults (each image's min..max) give what depth ControlNets were trained on (MiDaS-style
    relative inverse depth). v1.x depth checkpoints predict near = 0 and are inverted;
    ``*-disparity`` ones already have near = 1. ``per_image=False`` keeps one scale over the batch
    (video); ``gamma`` < 1 brightens the far range, > 1 darkens it.
    """
    if prediction.quantity is Quantity.NORMAL:
        raise LotusError("to_controlnet needs a depth or disparity prediction, got normals")
    values = prediction.values
    if not prediction.quantity.near_is_high:
        values = 1 - values
    return normalize(values, low, high, per_image=per_image, gamma=gamma)


def normals_to_image(prediction: LotusPrediction) -> torch.Tensor:
    """[B, 3, H, W] normal map in [0, 1] from the renormalised unit vectors ((n + 1) / 2)."""
    if prediction.quantity is not Quantity.NORMAL:
        raise LotusError(f"normals_to_image needs a normal prediction, got {prediction.quantity.value}")
    return (prediction.values + 1) / 2
