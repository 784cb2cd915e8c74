"""Frame sequences without flicker: shared noise, latent carry-over, per-frame alignment."""

from __future__ import annotations

import torch

from .alignment import align_to, into_unit_range
from .errors import LotusError, check_choice
from .imaging import check_images, processing_size
from .inference import DEFAULT_PROCESSING_RESOLUTION, predict
from .model import LotusModel
from .outputs import LotusPrediction
from .progress import part
from .variants import Quantity

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


def predict_video(
    model: LotusModel,
    frames: torch.Tensor,
    *,
    latent_blend: float = DEFAULT_LATENT_BLEND,
    align: str = "previous",
    processing_resolution: int = DEFAULT_PROCESSING_RESOLUTION,
    seed: int | None = None,
    chunk_size: int | None = None,
    callback=None,
    **predict_options,
) -> LotusPrediction:
    """Predict a frame sequence [T, 3, H, W] so that static content keeps its depth.

    Every frame gets the same random draws (one shared noise for Lotus-G, one VAE sample). With
    ``latent_blend`` > 0 (Lotus-G), frame t's noise is ``(1 - blend) * noise + blend * x0[t-1]``,
    as in the official video demo, which makes frames sequential. Depth and disparity are then
    aligned frame to frame (``align``), so the values of a static object do not pulse; normalise
    them over the whole sequence with ``to_controlnet(prediction, per_image=False)``. Aligned values
    that leave [0, 1] are brought back by one scale and shift for the whole sequence.
    """
    frames = check_images(frames)
    if not 0 <= latent_blend < 1:
        raise LotusError(f"latent_blend={latent_blend!r} must be in [0, 1)")
    check_choice("align", align, ALIGN_MODES)
    count, _, height, width = frames.shape
    options = dict(predict_options, processing_resolution=processing_resolution)
    if not model.generative or latent_blend == 0:
        prediction = predict(model, frames, seed=seed, shared_noise=True, chunk_size=chunk_size,
                             callback=callback, **options)
        values, latents = prediction.values, prediction.latent
    else:
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, ()))
        # Draw as predict(seed=seed, shared_noise=True) would: the noise, then the VAE sample. Every
        # frame restarts from the state after the noise, so all frames share one VAE sample.
        generator = torch.Generator("cpu").manual_seed(seed)
        size = processing_size(height, width, processing_resolution)
        shared = torch.randn((1, 4, size[0] // 8, size[1] // 8), generator=generator)
        after_noise = generator.get_state()
        outputs, latent_list, previous = [], [], None
        for index in range(count):
            noise = shared if previous is None else (1 - latent_blend) * shared + latent_blend * previous
            frame_generator = torch.Generator("cpu").set_state(after_noise)
            single = predict(model, frames[index:index + 1], noise=noise, generator=frame_generator,
                             callback=part(callback, index, count), **options)
            outputs.append(single.values)
            latent_list.append(single.latent)
            previous = single.latent.cpu()
        values, latents = torch.cat(outputs), torch.cat(latent_list)
    if model.quantity is Quantity.NORMAL:
        return LotusPrediction.from_values(values, latents, model.quantity)
    return LotusPrediction.from_values(into_unit_range(stabilize(values, align)), latents, model.quantity)
