"""Frame sequences without flicker: shared noise, latent carry-over, per-frame alignment."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..depthmap import DepthMap
from ..errors import LotusError, check_choice
from ..loading.model import LotusModel
from ..loading.variants import Quantity
from ..prediction.images import validating_images
from ..prediction.predict import run_prediction
from .alignment import align_to, into_unit_range

ALIGN_MODES = ("previous", "first", "none")
DEFAULT_LATENT_BLEND = 0.1  # the official demo: noise = 0.9 * shared noise + 0.1 * previous x0


def stabilize(values: torch.Tensor, reference: str = "previous") -> torch.Tensor:
    """Align each frame of affine-invariant ``values`` [T, 1, H, W] to the previous aligned frame
    (``"previous"``) or to the first frame (``"first"``) by least-squares scale and shift."""
    check_choice("align", reference, ALIGN_MODES)
    if reference == "none":
        return values
    aligned = [values[:1]]
    for frame in values[1:]:
        target = aligned[-1] if reference == "previous" else aligned[0]
        aligned.append(align_to(frame[None], target))
    return torch.cat(aligned)


def _predict_video(
    model: LotusModel,
    frames: torch.Tensor,
    *,
    latent_blend: float = DEFAULT_LATENT_BLEND,
    align: str = "previous",
    **predict_options,
) -> DepthMap:
    """Predict a frame sequence [T, 3, H, W] so that static content keeps its depth.

    Every frame gets the same random draws (one shared noise for Lotus-G, one VAE sample). With
    ``latent_blend`` > 0 (Lotus-G), frame t's noise is ``(1 - blend) * noise + blend * x0[t-1]``,
    as in the official video demo, which makes frames sequential (one per pass: ``chunk_size`` 1 or
    None). Depth and disparity are then aligned frame to frame (``align``), so the values of a
    static object do not pulse; normalise them over the whole sequence with
    ``to_controlnet(prediction, per_image=False)``. Aligned values that leave [0, 1] are brought
    back by one scale and shift for the whole sequence. Other options are those of ``predict``.
    """
    check_choice("align", align, ALIGN_MODES)
    if "shared_noise" in predict_options:
        raise LotusError("predict_video shares the random draws across frames itself: leave out shared_noise")
    blend = latent_blend if model.generative else 0  # Lotus-D takes no noise to blend
    prediction = run_prediction(model, frames, shared_noise=True, latent_blend=blend, **predict_options)
    if model.quantity is Quantity.NORMAL:
        return prediction
    return replace(prediction, values=into_unit_range(stabilize(prediction.values, align)))


predict_video = validating_images(_predict_video)
