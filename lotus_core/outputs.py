"""Turning a prediction into the conventions other tools expect."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import LotusError
from .variants import Quantity


@dataclass(frozen=True)
class LotusPrediction:
    """One batch of Lotus predictions at the input size.

    Attributes:
        image: [B, 3, H, W] in [0, 1], the decoded output exactly as the reference pipeline returns it.
        latent: [B, 4, h, w] the predicted clean latent (x0), e.g. to blend into the next video frame.
        quantity: what ``image`` encodes.
    """

    image: torch.Tensor
    latent: torch.Tensor
    quantity: Quantity

    @property
    def values(self) -> torch.Tensor:
        """Depth or disparity as [B, 1, H, W] in [0, 1] (channel mean, as the reference), or
        normals as [B, 3, H, W] unit vectors (x left, y up, z towards the viewer)."""
        if self.quantity is Quantity.NORMAL:
            return torch.nn.functional.normalize(self.image * 2 - 1, dim=1)
        return self.image.mean(dim=1, keepdim=True)


def to_controlnet(prediction: LotusPrediction) -> torch.Tensor:
    """[B, 1, H, W] in [0, 1] with near = white, each image stretched to the full range.

    This is what depth ControlNets were trained on (MiDaS-style inverse depth). v1.x depth
    checkpoints predict near = 0 and are inverted; ``*-disparity`` ones already have near = 1.
    """
    if prediction.quantity is Quantity.NORMAL:
        raise LotusError("to_controlnet needs a depth or disparity prediction, got normals")
    values = prediction.values
    if not prediction.quantity.near_is_high:
        values = 1 - values
    low = values.amin(dim=(1, 2, 3), keepdim=True)
    high = values.amax(dim=(1, 2, 3), keepdim=True)
    # A flat prediction has no near or far: map it to mid-grey instead of dividing by zero.
    span = high - low
    return torch.where(span > 0, (values - low) / span.clamp_min(1e-12), torch.full_like(values, 0.5))


def normals_to_image(prediction: LotusPrediction) -> torch.Tensor:
    """[B, 3, H, W] normal map in [0, 1] from the renormalised unit vectors ((n + 1) / 2)."""
    if prediction.quantity is not Quantity.NORMAL:
        raise LotusError(f"normals_to_image needs a normal prediction, got {prediction.quantity.value}")
    return (prediction.values + 1) / 2
