"""Test-time ensembles: several predictions per image, aligned and combined, with their spread."""

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

REDUCTIONS = ("median", "mean")
ALIGNMENT_ROUNDS = 2  # align to the current consensus, recompute it, once more: enough to converge


def _predict_ensemble(
    model: LotusModel,
    images: torch.Tensor,
    *,
    ensemble_size: int = 4,
    flip: bool = False,
    reduction: str = "median",
    **predict_options,
) -> DepthMap:
    """Predict each image ``ensemble_size`` times and combine the members.

    Members differ by their random draws (Lotus-G noise and the VAE sample) and, with ``flip``, every
    second member sees the mirrored image (test-time augmentation that also helps Lotus-D). Depth and
    disparity members are aligned to their consensus by least-squares scale and shift before the
    ``reduction``; normals are averaged as vectors and renormalised. ``uncertainty`` is the members'
    standard deviation (depth) or ``1 - |mean normal|`` (normals): 0 where they agree.

    All members go through the network as one batch of ``B * ensemble_size`` images in chunks of
    ``chunk_size`` (default: ``ensemble_size``). Other options are those of ``predict``.
    """
    if not isinstance(ensemble_size, int) or ensemble_size < 1:
        raise LotusError(f"ensemble_size={ensemble_size!r} must be an integer >= 1")
    if flip and ensemble_size < 2:
        raise LotusError("flip=True needs ensemble_size >= 2 (half the members see the mirrored image)")
    check_choice("reduction", reduction, REDUCTIONS)
    if predict_options.get("shared_noise"):
        raise LotusError("shared_noise=True would make every ensemble member identical")
    predict_options.setdefault("chunk_size", ensemble_size)

    batch = images.shape[0]
    flipped = torch.arange(ensemble_size) % 2 == 1 if flip else torch.zeros(ensemble_size, dtype=torch.bool)
    members = images.repeat(ensemble_size, 1, 1, 1)  # [E*B,3,H,W], member-major
    mirrored = flipped.repeat_interleave(batch)
    members[mirrored] = members[mirrored].flip(-1)
    prediction = run_prediction(model, members, **predict_options)

    values = prediction.values.clone()  # [E*B,C,H,W], made under inference mode: a copy to edit
    values[mirrored] = values[mirrored].flip(-1)
    if model.quantity is Quantity.NORMAL:
        values[mirrored, 0] = -values[mirrored, 0]  # mirroring the image mirrors the x axis
    values = values.reshape(ensemble_size, batch, *values.shape[1:])  # [E,B,C,H,W]
    latent = prediction.latent.reshape(ensemble_size, batch, *prediction.latent.shape[1:])[0]

    if model.quantity is Quantity.NORMAL:
        mean = values.mean(0)
        combined = torch.nn.functional.normalize(mean, dim=1)
        uncertainty = (1 - mean.norm(dim=1, keepdim=True)).clamp(0, 1)
    else:
        combined, uncertainty = _combine_affine(values, reduction)
    return replace(prediction, values=combined, latent=latent, uncertainty=uncertainty)


predict_ensemble = validating_images(_predict_ensemble)


def _combine_affine(values: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Consensus and spread of affine-invariant members [E, B, 1, H, W]."""
    reduce = (lambda v: v.median(0).values) if reduction == "median" else (lambda v: v.mean(0))
    consensus = reduce(values)
    for _ in range(ALIGNMENT_ROUNDS):
        values = torch.stack([align_to(member, consensus) for member in values])
        consensus = reduce(values)
    spread = values.std(0, unbiased=False)
    combined = into_unit_range(consensus)
    # in the combined map's units: into_unit_range may have rescaled it
    scale = (combined.max() - combined.min()) / (consensus.max() - consensus.min()).clamp_min(1e-12)
    return combined, spread * scale
